"""Channel work of the width transforms: analysis apart from surgery.

- :mod:`~harden.channels.analysis`: torch-pruning's dependency graph, coupled channel groups, L1
  importance, which channels a narrowing removes, layer widths and their change (edits nothing);
- :mod:`~harden.channels.surgery`: removing the chosen channels from a coupled group;
- :mod:`~harden.channels.growth`: widening coupled groups in place (torch-pruning cannot);
- :mod:`~harden.channels.flow`: channels followed through shuffles, chunks and splits on the fx graph
  (analysis only), for the networks torch-pruning does not follow;
- :mod:`~harden.channels.flow_groups`: the groups those networks narrow together, chosen and removed.
"""
