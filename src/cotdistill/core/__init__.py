"""What every stage shares and no stage owns: the run's configuration (config.py), the run directory
(rundir.py), records (records.py), tasks, prompts and answers, files, paths, hashes, secrets,
progress, signals, CPU facts. Imports nothing else of cotdistill."""
