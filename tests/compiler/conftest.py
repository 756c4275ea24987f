import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# every compilation in these tests checks the IR after each pass (compiler/verify.py)
os.environ.setdefault("NPU_VERIFY_IR", "1")
