"""Your own code travels with the call: find the local modules a job needs and ship their source.

A job's payload is cloudpickled. A ``@cluster`` function itself always travels by value,
but whatever it uses from the user's own modules (``from mylib import helper``, a class
from ``mypkg.models``, an argument whose class lives in a local file) is pickled *by
reference*: the remote side imports ``mylib`` again, and ``mylib`` exists only on the
machine that submitted. This module finds those modules and makes them exist remotely.

**Detection.** The payload is pickled once with a pickler that records every module
named by reference (functions and classes by reference, module objects) and every
absolute ``import`` inside code pickled by value (``import mylib`` in a function body).
A name is *local* when its file is neither in the standard library nor in an installed
distribution (site-packages, the interpreter's prefix, a ``pip install --target``
folder): the script's folder, a notebook's folder, any folder on ``sys.path``, and the
source tree of an editable install (``pip install -e .``). A local top-level name becomes a *unit*: the module file,
or the whole package folder (so relative imports and data files work); the local
modules a unit itself imports are added, transitively. ``ship_modules`` adds names the
detection cannot see (``importlib.import_module(name_from_a_string)``);
``exclude_modules`` names local modules the remote side already has.

**Why a source archive, not cloudpickle's ``register_pickle_by_value``.** By value, every
payload would carry the code again (a ``.map()`` of a large project, each submit), module
code would not run on import (registries, ``__init__`` side effects, module-level
constants built at import are copied as they are now, not rebuilt), classes would be
re-created per payload, relative imports inside a package would still go by reference,
and files inside a package (``importlib.resources.files(__package__)``, ``__file__``
neighbours) would not exist remotely. A unit shipped as its source files is imported
remotely exactly as here, tracebacks show the real source lines, and it is stored once
per content hash under ``<remote_work_dir>/code/<name>-<sha256[:16]>``, so an unchanged
project is never sent again (one probe command per process and host) and a changed file
is a new unit.

**Refusals**, before the job is submitted: a compiled extension module built here (it
would need the same platform and libraries), a unit larger than ``max_module_size``,
and a unit that fails to import with the remote Python (checked once per unit set,
python and host); each error names the module and the fix.

**The modules**, in the order a submit uses them:

- :mod:`~clustrix.remote.localcode.detection`: the recording pickler
  (:func:`~clustrix.remote.localcode.detection.dumps_recording`) and what is local
  (:func:`~clustrix.remote.localcode.detection.locate`).
- :mod:`~clustrix.remote.localcode.units`: a module or package as it travels
  (:class:`~clustrix.remote.localcode.units.CodeUnit`), the refusals, and the
  :func:`~clustrix.remote.localcode.units.archive` of units.
- :mod:`~clustrix.remote.localcode.plan`: the units a job needs
  (:func:`~clustrix.remote.localcode.plan.plan_code`).
- :mod:`~clustrix.remote.localcode.shipping`: sending them through a transport and checking they
  import (:func:`~clustrix.remote.localcode.shipping.ship`).

A backend pickles its payload with ``dumps_recording`` and plans it (or calls
:func:`clustrix.remote.jobdir.encode_payload_and_code`), then ships the plan through its
transport; the returned :class:`~clustrix.remote.localcode.shipping.ShippedCode` has the
``PYTHONPATH`` line for the job's shell prelude and the remote paths (for a backend that sets
environment variables instead). A backend without a shared filesystem can send the archive
through its own payload channel.
"""
