"""Image-distribution metrics: FID and KID on features of a named extractor.

Values are only comparable for the same extractor: the metric names carry it (``fid_cnn``,
``kid_cnn``, ``fid_inception``, ...) and the extractor's id is recorded with every value.
"""
