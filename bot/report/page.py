"""The report page's stylesheet (a ``string.Template``: ``$name`` takes a theme colour)."""

from __future__ import annotations

from string import Template

CSS = Template("""
*{box-sizing:border-box}
body{margin:0;background:$page;color:$text;font-family:$font;font-size:14px;line-height:1.45}
header{padding:28px 40px 18px;background:$card;border-bottom:1px solid $border}
header .title{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
h1{margin:0;font-size:24px;font-weight:650;letter-spacing:-0.01em}
h2{margin:0 0 14px;font-size:17px;font-weight:620}
header .sub{margin-top:6px;color:$muted}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:600;
  text-transform:uppercase;letter-spacing:.04em;border:1px solid $border;color:$muted}
.badge.ok{color:#15803d;background:rgba(22,163,74,.12);border-color:rgba(22,163,74,.35)}
.badge.warn{color:#b45309;background:rgba(245,158,11,.14);border-color:rgba(245,158,11,.4)}
.badge.bad{color:#b91c1c;background:rgba(220,38,38,.12);border-color:rgba(220,38,38,.35)}
.badge.info{color:$accent;background:rgba(37,99,235,.1);border-color:rgba(37,99,235,.35)}
.alert{margin-top:12px;padding:10px 14px;border-radius:8px;background:rgba(220,38,38,.1);
  border:1px solid rgba(220,38,38,.35);color:$text}
nav{position:sticky;top:0;z-index:10;display:flex;gap:4px;flex-wrap:wrap;padding:8px 36px;background:$card;
  border-bottom:1px solid $border}
nav a{color:$muted;text-decoration:none;padding:5px 10px;border-radius:6px;font-weight:550}
nav a:hover{background:$page;color:$text}
main{max-width:1320px;margin:0 auto;padding:20px 28px 40px}
section{background:$card;border:1px solid $border;border-radius:12px;padding:20px 22px;margin:0 0 20px;
  scroll-margin-top:56px}
.figure{margin-top:6px}
.note{color:$muted;margin:-6px 0 10px}
.empty{color:$muted;font-style:italic;margin:6px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-bottom:18px}
.card{border:1px solid $border;border-radius:10px;padding:12px 14px;background:$page}
.card-label{color:$muted;font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.card-value{font-size:24px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.pos{color:$gain}.neg{color:$loss}
table{border-collapse:collapse;width:100%}
table.metrics th{text-align:left;font-weight:500;color:$muted;padding:6px 10px;border-bottom:1px solid $border;
  width:22%}
table.metrics td{padding:6px 16px 6px 10px;border-bottom:1px solid $border;width:28%}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{max-height:560px;overflow:auto;border:1px solid $border;border-radius:8px}
table.list th{position:sticky;top:0;background:$page;text-align:left;font-weight:600;color:$muted;
  padding:7px 10px;border-bottom:1px solid $border;white-space:nowrap;font-size:12.5px}
table.list td{padding:6px 10px;border-bottom:1px solid $border;font-size:13px;white-space:nowrap}
table.list td.why{white-space:normal;min-width:280px}
table.list tr:hover td{background:$page}
td.why{color:$muted;font-size:12.5px}
details summary{cursor:pointer;color:$muted}
pre{background:$page;border:1px solid $border;border-radius:8px;padding:12px;overflow:auto;font-size:12px}
footer{color:$muted;text-align:center;padding:10px 0 30px;font-size:12.5px}
""")
