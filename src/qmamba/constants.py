"""Token ids that the data pipeline and the model agree on; both import them from here.

``IMAGE_TOKEN_ID``: the id that stands for one image in ``input_ids`` (-200, as LLaVA). The chat
encoding writes it where a prompt says ``<image>``; the multimodal model replaces it with the
connector's visual tokens. It is negative so that it can never be a vocabulary id.

``IGNORE_INDEX``: the label of a position the loss skips (-100, PyTorch's ``cross_entropy`` default):
prompts, images and padding.
"""

IMAGE_TOKEN_ID = -200
IGNORE_INDEX = -100
