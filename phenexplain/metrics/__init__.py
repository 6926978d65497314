"""Image-distribution metrics: FID and KID on features of a named extractor.

Values are only comparable for the same extractor: the metric names carry it (``fid_rand``,
``kid_rand``, ...) and the extractor's id is recorded with every value.
"""
