"""Pictures of what a model computes, drawn with PIL alone: ``attention`` (query attention maps over the image's
patch grid, ``qmamba viz attention``) on ``heatmap`` (labelled heat-map panels over an image)."""
