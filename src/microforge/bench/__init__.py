"""MLPerf-Tiny style benchmarking helpers, numpy only at run time:

    microforge.bench.audio     wav reading, resampling, pad/trim
    microforge.bench.features  KWS MFCC and AD log-mel as the MLPerf Tiny references; TFLite input quantization
    microforge.bench.images    VWW / IC image resizing and int8 input
    microforge.bench.dataset   the EEMBC runner dataset format (per-sample .bin + y_labels.csv); FSDD -> KWS
    microforge.bench.metrics   top-1 accuracy, ROC AUC, AD reconstruction score
"""
