"""Real text for loss-curve comparisons, from what every Python has: the documentation topics of
pydoc (about 465 KB of English prose and code). Tokens are its UTF-8 bytes (ids 0-255, valid in
any vocabulary of 256 or more), so no tokenizer file has to travel to the GPU machine and every
system trains on exactly the same ids."""
import json

from pydoc_data.topics import topics


def text_bytes():
    return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")


def make_text_data(path, rows, seq_len):
    """rows JSONL records of seq_len + 1 ids each, consecutive windows of the text (wrapping
    around), in the format of random_llama.make_data."""
    data = text_bytes()
    step = seq_len + 1
    with open(path, "w") as f:
        for i in range(rows):
            start = (i * step) % (len(data) - step)
            f.write(json.dumps({"input_ids": list(data[start:start + step])}) + "\n")
