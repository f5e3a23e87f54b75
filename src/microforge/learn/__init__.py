"""On-device continual learning with latent replays: split a trained int8 model at its latent-replay layer
(split.py), train its float back (layers.py) on new data mixed with quantized replays (replay.py) by a
strategy (strategies.py) through a scenario (scenarios.py), and measure it (metrics.py, api.py).

    from microforge import learn
    cut = learn.split("models/learn/fsdd_digits0-4_int8.tflite", classes=10)
    result = learn.run_stream(learn.LatentReplay(cut, buffer_size=1500), learn.scenario("fsdd-class-incremental",
                                                                                    cut.front.inputs[0]))
"""

from microforge.learn.scenarios import Experience, scenario
from microforge.learn.split import Split, split
from microforge.learn.strategies import Hyper, Joint, LatentReplay, Naive, RawReplay, run_stream, strategy

__all__ = ["Experience", "scenario", "Split", "split", "Hyper", "Joint", "LatentReplay", "Naive", "RawReplay",
           "run_stream", "strategy"]
