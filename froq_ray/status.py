"""Row statuses shared by every stage: each input becomes exactly one row carrying one of these."""

OK = "ok"
EMPTY = "empty"  # zero-byte object
NOT_AN_IMAGE = "not_an_image"  # bytes no image decoder recognises
CORRUPT = "corrupt"  # recognised image format that fails to decode (truncated, damaged)
READ_ERROR = "read_error"  # the object could not be read (missing, permission, network)
MODEL_ERROR = "model_error"  # decoded, but the scoring stage failed on it

ALL = (OK, EMPTY, NOT_AN_IMAGE, CORRUPT, READ_ERROR, MODEL_ERROR)
