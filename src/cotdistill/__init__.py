"""cotdistill: teach small language models to reason by distilling a teacher's chains of thought."""

__version__ = "0.1.0"
