"""Questions in, splits out: records (records.py), readers of the authors' formats (readers.py,
load.py), offline generators (generators.py), overlap and decontamination (overlap.py), and the
data stage's train / dev / test splits (splits.py)."""
