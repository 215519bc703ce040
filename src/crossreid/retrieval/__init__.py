"""Feature extraction, gallery search and export."""
