"""A lossd loss plugin that misbehaves, for tests/integration/test_plugins.py and the unit tests of the
plugin loader: losses that raise what must not leave them, sleep, or change their params
(:mod:`.losses`), and modules the loader must refuse (:mod:`.exits`, :mod:`.bad_param`,
:mod:`.empty_alias`). Not installed: a test writes its entry points (:data:`ENTRY_POINTS`) into a
``*.dist-info`` and puts it and this folder on ``PYTHONPATH``, as tests/support/gated_loss.py does.
"""

#: The ``[lossd.losses]`` entry points of this package, as an ``entry_points.txt`` lists them.
ENTRY_POINTS = {
    "faulty": "lossd_faulty_plugin.losses",
    "exits": "lossd_faulty_plugin.exits",
    "badparam": "lossd_faulty_plugin.bad_param",
    "emptyalias": "lossd_faulty_plugin.empty_alias",
    "mistakes": "lossd_faulty_plugin.mistakes",
    "badsignature": "lossd_faulty_plugin.bad_signature",
}
