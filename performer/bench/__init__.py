"""What the benchmark and experiment scripts share.

  timing     compile, estimate memory, time; device and failure description
  flags      command-line values parsed and checked once for every script
  grid       the loop over configurations that records every outcome
  report     number formats, markdown tables, the text and JSON outputs
  plots      headless matplotlib, atomic PNGs, log-log scaling grids
  flops      FLOP formulas of the attention variants
  curves     training curves read from workdirs and drawn
  lra_grid   the Long Range Arena grid: runs, collection, tables, plot

What each benchmark measures, one module each:

  attention_scaling    attention alone: time and memory versus length
  model_scaling        the whole model: time and memory versus length
  training_throughput  the trainer's step: tokens per second
  generation_speed     decoding: time per generated token versus position
  approximation_error  random-feature attention against the exact kernel

The scripts in scripts/ parse flags and call these.
"""
