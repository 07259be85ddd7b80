"""The run machinery: everything around the maths that trains, samples and evaluates a model.

Commands (what ``cli.py`` dispatches to, open to the Python API as well):
    session     train: options -> config, resume and existing-run checks under the run lock,
                memory check, data, the Trainer
    sampling    sample (PNG grid, .npy, one PNG per sample) and compare (test vs generated)
    scoring     eval: held-out log-likelihood and test MSE, by a named estimator
    plotting    plot-log (training curves) and plot-prior (learned densities)
    jobs, sweep job files run line by line with a summary; the π0 × basis sweep as one
    data        the images a command reads, and the data folder / test count a checkpoint keeps
    arguments   argparse helpers: bounded integers, one-line argument errors, options as words
    failures    every failure as one "error:" line and an exit status

Machinery:
    trainer     the training loop;  checkpoint  save, validate, restore;  guard  NaN guard
    memory      memory estimate before allocating;  lock  one trainer per folder
    signals     SIGINT/SIGTERM stop after the iteration;  atomic  all-or-nothing file writes
    logfile     OUT/log.csv, written and read
"""
