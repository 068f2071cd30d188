"""Write the offline HTML template for ``dvc plots show``/``dvc plots diff`` (Vega inlined, no CDN).

DVC's default page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net through its ``{scripts}``
placeholder. This template has no ``{scripts}`` placeholder (so DVC's CDN tags are dropped) and carries
the three libraries inline instead. Rebuild it (e.g. to update Vega) with::

    cd /tmp && npm pack vega@5 vega-lite@5 vega-embed@6 &&
        for f in vega-*.tgz; do mkdir -p ${f%.tgz} && tar xzf $f -C ${f%.tgz}; done
    python scripts/offline_plots_template.py /tmp/vega-5.*/package/build/vega.min.js \
        /tmp/vega-lite-5.*/package/build/vega-lite.min.js /tmp/vega-embed-6.*/package/build/vega-embed.min.js

and use it with ``dvc config plots.html_template offline_plots.html`` (a path relative to ``.dvc/``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / ".dvc" / "offline_plots.html"
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")


def _version(js: str, path: Path) -> str:
    pkg = path.parent.parent / "package.json"
    if pkg.is_file():
        return json.loads(pkg.read_text())["version"]
    m = re.search(r'version\s*[:=]\s*"(\d+\.\d+\.\d+)"', js)
    return m.group(1) if m else "unknown"


def build(vega: Path, vega_lite: Path, vega_embed: Path) -> str:
    parts = []
    for name, path in (("vega", vega), ("vega-lite", vega_lite), ("vega-embed", vega_embed)):
        js = path.read_text(encoding="utf8")
        if "</script" in js.lower() or any(p in js for p in PLACEHOLDERS):
            raise SystemExit(f"{path} cannot be inlined (contains </script> or a DVC placeholder)")
        parts.append(f"<!-- {name} {_version(js, path)} (BSD-3-Clause, https://github.com/vega) -->\n"
                     f"<script type=\"text/javascript\">\n{js}\n</script>")
    scripts = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("vega", type=Path)
    ap.add_argument("vega_lite", type=Path)
    ap.add_argument("vega_embed", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.write_text(build(args.vega, args.vega_lite, args.vega_embed), encoding="utf8")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
