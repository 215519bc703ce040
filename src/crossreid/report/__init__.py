"""Self-contained HTML reports: tables, CMC plots, ranked-list strips."""
