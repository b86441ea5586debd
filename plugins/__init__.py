"""harden's built-in transforms, each registered through the ``harden.transforms`` entry-point group.

This folder is installed as the ``harden_plugins`` package; a third-party plugin package looks the
same: a :class:`harden.Transform` subclass and an entry point naming it.
"""
