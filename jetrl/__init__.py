"""jetrl: asynchronous RL for language models as services over NATS JetStream and Postgres."""

import os

# Hugging Face libraries draw tqdm bars on every load and save; jetrl shows its own progress.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
