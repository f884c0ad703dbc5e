"""Per-site drift checks with Evidently; only summaries leave a site."""
