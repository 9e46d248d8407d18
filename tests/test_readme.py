"""The README's Python snippets run as written, without any warning (``python -W error``)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

# What the snippets leave to the reader, at tiny sizes: the hook loop's model, optimizer, epochs and
# loader (a narrow Fashion-MNIST-sized model and four random images).
_LOOP_SETUP = '''
import torch
model = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.05)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
epochs = 3
loader = [(torch.rand(4, 1, 16, 16), torch.randint(0, 10, (4,)))]
'''


def _snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_snippets():
    assert len(_snippets()) >= 3


def test_readme_snippets_run_with_warnings_as_errors(tmp_path):
    first, *rest = _snippets()
    script = "\n".join([first, _LOOP_SETUP, *rest])
    proc = subprocess.run([sys.executable, "-W", "error", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={"PYTHONPATH": str(README.parent), "PATH": "/usr/bin:/bin",
                                            "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
