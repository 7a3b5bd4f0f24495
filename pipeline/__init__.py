"""The machinery that runs the science: run folders (one writer, finished once, resumed only from a
matching checkpoint), their lock, the scheduler that runs a pipeline's units on worker processes,
and train.py's command line. It imports core/ and nothing of minidiff/, minigan/ or eval/: the
stages call it, not the other way round.

    runs.py        run folders and run keys (what a result depends on)
    lock.py        one writer per run folder (flock, released when its holder dies)
    scheduler.py   units with dependencies, run by N workers; the plan for other schedulers
    worker.py      a worker process: runs the units its parent sends, dies with its parent
    command.py     train.py's options, checked before any work; errors as one line
"""
