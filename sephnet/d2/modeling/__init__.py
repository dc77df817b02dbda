"""Models of the portable core (detectron2.modeling). Public names are re-exported here once
all submodules exist; submodules import each other by full path."""
