"""Score a run's classifier.keras as a user without cvtrain would: plain Keras, safe mode,
no custom objects. ``python score_classifier.py RUN_FOLDER IMAGES.npy LABELS.npy`` prints
one JSON line: the backend, the accuracy and the loss (Keras's categorical cross-entropy)
on those uint8 images, the probabilities' file. Imports nothing of cvtrain (checked)."""

import json
import sys
from pathlib import Path

import keras
import numpy as np

run, images, labels = Path(sys.argv[1]), np.load(sys.argv[2]), np.load(sys.argv[3])
model = keras.saving.load_model(run / "classifier.keras")
classes = json.loads((run / "classes.json").read_text())
probs = np.asarray(model.predict(images, batch_size=64, verbose=0), np.float64)
assert probs.shape == (len(images), len(classes)), probs.shape
picked = np.clip(probs / probs.sum(axis=1, keepdims=True), 1e-7, 1 - 1e-7)
loss = float(-np.log(picked[np.arange(len(labels)), labels]).mean())
out = Path(sys.argv[2]).with_suffix(f".{keras.backend.backend()}.probs.npy")
np.save(out, probs)
print(json.dumps({"backend": keras.backend.backend(),
                  "accuracy": float((probs.argmax(axis=1) == labels).mean()), "loss": loss,
                  "probs": str(out),
                  "cvtrain_imported": any(m.startswith("cvtrain") for m in sys.modules)}))
