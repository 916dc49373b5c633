"""Token ids every layer agrees on: models, data and tasks read them from here."""

PAD_ID = 0  # padding: embeddings keep it at zero, attention masks it out
BOS_ID, EOS_ID = 1, 2  # a target sequence is framed [BOS] … [EOS]
IGNORE_INDEX = -100  # a label that is not scored (cross_entropy's ignore_index)
