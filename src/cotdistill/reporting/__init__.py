"""What a run shows: report.md / report.html (report.py over blocks.py), plots (plots.py), paired
tests (paired.py) and the shareable model and dataset cards (cards.py)."""
