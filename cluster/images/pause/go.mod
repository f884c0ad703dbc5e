module local/pause

go 1.21
