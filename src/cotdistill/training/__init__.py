"""The train stage: pairs and batches (collate.py), the Trainer subclass with the target-only loss
(student_trainer.py, head_loss.py) and the resumable stage around it (train.py). Students are
found, loaded and saved by cotdistill.models.students, which evaluation shares."""
