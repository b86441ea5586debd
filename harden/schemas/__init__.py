"""One schema per command: the settings of ``finetune``, ``evaluate`` and ``search``, each written once.

:mod:`~harden.schemas.fields` is the mechanism (a field's default, kind, choices and help);
:mod:`~harden.schemas.finetune`, :mod:`~harden.schemas.evaluate` and :mod:`~harden.schemas.search`
are the schemas. The command line options, the recipe keys and the checks of the library's keyword
arguments are derived from them. Nothing here imports torch.
"""
