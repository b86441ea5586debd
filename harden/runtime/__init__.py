"""The run layer shared by ``finetune``, ``evaluate`` and ``run`` (and the commands to come).

- :mod:`~harden.runtime.session`: the torchrun process group, joined and left around a run
- :mod:`~harden.runtime.distributed`: collectives over the group, and each process's device
- :mod:`~harden.runtime.store`: resumable state (checkpoints, progress), its fingerprint and digests
- :mod:`~harden.runtime.atomic`: artefacts written atomically (files, figures)
- :mod:`~harden.runtime.stamp`: the versions and the device a result was made with
- :mod:`~harden.runtime.events`: progress and metric events, and the sinks that receive them
- :mod:`~harden.runtime.modes`: train/eval modes kept across a block

Nothing is imported here, so ``import harden.runtime.atomic`` does not pull in torch.
"""
