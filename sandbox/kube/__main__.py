"""``python -m sandbox.kube --name site-a --port 0``: one sandbox cluster in this process (process.py)."""

from sandbox.kube.process import main

main()
