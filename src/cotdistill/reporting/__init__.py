"""What a run shows: report.md / report.html (report.py over blocks.py), plots (plots.py), paired
tests (paired.py), a study's comparison (study.py) and the shareable model and dataset cards
(cards.py)."""
