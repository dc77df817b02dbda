"""sephnet's command-line tools (``python -m sephnet.tools.<name>``).

* :mod:`~sephnet.tools.plot_metrics`: loss, learning-rate and AP curves from ``metrics.json``;
* :mod:`~sephnet.tools.ablate`: run rows of the experiment log through ``train_net.py``;
* :mod:`~sephnet.tools.ablation_index`: the experiment log's rows as data;
* :mod:`~sephnet.tools.results_table`: our results beside the log's (table and chart);
* :mod:`~sephnet.tools.ensemble`: COCO AP of fused models (NMS, box voting, WBF; with TTA)
  or of fused saved predictions.
"""
