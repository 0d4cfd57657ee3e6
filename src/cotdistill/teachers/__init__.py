"""Teacher backends behind one small protocol (see base.py); `load_teacher` picks one by name."""
