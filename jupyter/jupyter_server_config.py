"""Jupyter server settings for the course (make lab puts this folder on JUPYTER_CONFIG_PATH).

Every notebook is saved with its widget outputs frozen (atcourse.widgets.pre_save_hook):
reopened without the kernel that held them, progress bars read as their final text and
explorers as their pictures, never "Error displaying widget: model not found".
"""

import importlib.util
from pathlib import Path

c = get_config()  # noqa: F821 (given by the config loader)

# Loaded from its file, not as ``import atcourse.widgets``: the package's __init__ imports
# torch, which the server does not need (hundreds of MB); widgets.py needs only the
# standard library and tqdm to freeze a notebook.
_spec = importlib.util.spec_from_file_location(
    "atcourse_widgets_for_server", Path(__file__).resolve().parents[1] / "atcourse" / "widgets.py"
)
_widgets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_widgets)
c.ContentsManager.pre_save_hook = _widgets.pre_save_hook
