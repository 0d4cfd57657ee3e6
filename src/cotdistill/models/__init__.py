"""The models themselves: the embedded GGUF packages (embedded.py), loading a student
(students.py), and exporting one as a GGUF (gguf.py)."""
