from healthrisk.cli import main

main()
