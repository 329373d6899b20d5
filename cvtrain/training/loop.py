"""Steps per execution that really run as one compiled call on JAX.

Keras 3's JAX trainer runs ``steps_per_execution`` batches as that many separate compiled
calls, one per batch, from a Python loop: on a GPU the per-call dispatch (a few hundred
microseconds for a small CNN at batch 32) is longer than the step itself, so the device
waits on Python. :func:`scan_steps` gives a compiled model a train function that stacks
the execution's batches and runs them in one call, the step inside ``jax.lax.scan``:
one dispatch per execution. The step is Keras's own ``train_step`` (the same loss,
optimizer, metrics, and random-number state threaded from step to step), so each step
computes what it computes in Keras's loop. An execution whose batches are not all of
one shape (the short last batch of an epoch) runs them one by one, as Keras would.

Where it is used (``LOOP``) is what measured faster: on CPUs, XLA runs the convolutions
inside a loop about 4x slower than as calls of their own (BaseNet, 16 steps per execution,
2 cores: 0.53 s against 0.14 s an execution), so CPUs keep Keras's loop.
``$CVTRAIN_JAX_LOOP`` (``scan`` or ``steps``) overrides it, for benchmarks
(``benchmarks/throughput.py --jax-loop``).

It replaces the compiled model's ``make_train_function``, the hook Keras's JAX trainer
builds its train function with, so it is tied to the Keras release it was written for
(pinned in ``pyproject.toml``, checked by ``tests/test_loop.py``). Keras's own change to
the same end, keras-team/keras#23527 ("Accelerate multi-step training loops using
on-device ``jax.lax.scan`` for ``steps_per_execution > 1``", merged after 3.15.1), makes
it unnecessary: on the first release that carries it, delete this module and let Keras
run the executions.
"""

from __future__ import annotations

import os

#: the loop each device type uses on JAX (``scan``: one call per execution; ``steps``:
#: Keras's own, one call per batch)
LOOP = {"gpu": "scan", "cpu": "steps"}
LOOP_ENV = "CVTRAIN_JAX_LOOP"


def chosen_loop(device_type: str) -> str:
    value = os.environ.get(LOOP_ENV, "")
    return value if value in ("scan", "steps") else LOOP.get(device_type, "steps")


def scan_steps(model) -> bool:
    """Make ``model`` (compiled, on JAX, one device) run each execution as one compiled
    call. Returns whether it did: not for one step per execution, other backends, data
    parallel runs (Keras shards each batch itself there) or eager runs."""
    import keras

    steps_per_execution = model.steps_per_execution
    if (steps_per_execution <= 1 or keras.backend.backend() != "jax"
            or keras.distribution.distribution() is not None or model.run_eagerly
            or not model.jit_compile):
        return False
    import jax
    import jax.numpy as jnp
    import numpy as np

    def make_train_function(force=False):
        if model.train_function is not None and not force:
            return
        one = jax.jit(model.train_step, donate_argnums=0)

        def body(state, data):
            logs, state = model.train_step(state, data)
            return state, logs

        def scanned(state, stacked):
            state, logs = jax.lax.scan(body, state, stacked)
            return jax.tree.map(lambda v: v[-1], logs), state

        many = jax.jit(scanned, donate_argnums=0)

        def stack(*arrays):
            if all(isinstance(a, np.ndarray) for a in arrays):
                return np.stack(arrays)
            return jnp.stack(arrays)

        def train_function(state, iterator):
            batches = []
            for _ in range(steps_per_execution):
                try:
                    batches.append(next(iterator))
                except StopIteration:
                    if not batches:
                        raise
                    break
            shapes = {tuple(getattr(a, "shape", None) for a in jax.tree.leaves(b))
                      for b in batches}
            if len(batches) == steps_per_execution and len(shapes) == 1:
                return many(state, jax.tree.map(stack, *batches))
            for data in batches:
                logs, state = one(state, data)
            return logs, state

        model.train_function = train_function

    model.make_train_function = make_train_function
    model.train_function = None
    return True
