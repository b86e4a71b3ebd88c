"""What the tests share, one module per concept:

- ``processes``: child processes (the real command line, a hub process) with their output read line by line;
- ``hubproc``: a populated FakeHub in a process of its own (``python -m tests.support.hubproc``);
- ``net``: loopback network faults (resets, trickles, dead ports) and a forward proxy;
- ``faults``: the fault-injection tests' config, hub, failures and invariant;
- ``passes``: one pass of the real engine against a FakeHub;
- ``strategies``: Hypothesis strategies for the models and policies; ``decisions``: concrete decision cases;
- ``docs``: reading the code blocks of ``docs/*.md`` for the tests that keep the recipes true.
"""
