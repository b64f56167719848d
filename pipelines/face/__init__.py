"""Vec2Face: identity vector -> face images (`genstudio face`); data.py builds the avatar-face dataset."""
DEFAULT_MODEL = "vec2face-avatars-S"
