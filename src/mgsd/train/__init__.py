"""Training: one loop per method (sft.py, distill.py), shared machinery (common.py), losses.

`losses` holds pure tensor maths; `common` the setup, data order, checkpoints and logs.
"""
