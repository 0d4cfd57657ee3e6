"""The annotate stage: the teacher writes CoTs (annotate.py, over a teachers/ backend), the filters
judge them (filters.py, stepcheck.py)."""
