"""The operator's status page at `/`: one static HTML document that follows the `indexer` push topic."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rbtc-indexer status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}
h1{font-size:1.3rem}table{border-collapse:collapse;margin:1rem 0}
td,th{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}th{background:#f4f4f4}
#block{font-size:2rem;font-weight:600}.bad{color:#b00}.ok{color:#070}
</style></head>
<body>
<h1>rbtc-indexer</h1>
<div>Tables reflect block <span id="block">…</span> · data version <span id="version">…</span>
 · push <span id="conn" class="bad">connecting</span></div>
<h2>Components</h2>
<table><thead><tr><th>component</th><th>head</th><th>finalized</th><th>indexed</th><th>lag (blocks)</th>
<th>lag (s)</th><th>events</th><th>state</th></tr></thead><tbody id="components"></tbody></table>
<h2>Projections</h2>
<table><thead><tr><th>projection</th><th>block</th><th>hash</th><th>version</th></tr></thead>
<tbody id="projections"></tbody></table>
<h2>Tables</h2><table><tbody id="counts"></tbody></table>
<h2>Recent blocks</h2><table><thead><tr><th>number</th><th>hash</th></tr></thead><tbody id="blocks"></tbody></table>
<script>
function cell(v){const td=document.createElement('td');td.textContent=v===null||v===undefined?'–':String(v);return td}
function fill(id,rows){const body=document.getElementById(id);body.replaceChildren(...rows.map(r=>{
  const tr=document.createElement('tr');r.forEach(v=>tr.appendChild(cell(v)));return tr}))}
function show(s){
  document.getElementById('block').textContent=s.indexedBlock===null?'none yet':s.indexedBlock;
  document.getElementById('version').textContent=s.version;
  fill('components',s.components.map(c=>[c.component,c.head_block,c.finalized_block,c.indexed_block,
    c.lag_blocks,c.lag_seconds===null?null:Number(c.lag_seconds).toFixed(1),c.events_processed,
    c.failing?'error':'ok']));
  fill('projections',s.projections.map(p=>[p.projection,p.block,p.blockHash,p.version]));
  fill('counts',Object.entries(s.tableCounts).map(([t,n])=>[t,(s.tableCountsEstimated.includes(t)?'≈ ':'')+n]));
  fill('blocks',s.recentBlocks.map(b=>[b.number,b.hash]));
}
const source=new EventSource('api/realtime/stream?topics=indexer');
source.addEventListener('indexer',e=>show(JSON.parse(e.data).data));
source.onopen=()=>{const c=document.getElementById('conn');c.textContent='live';c.className='ok'};
source.onerror=()=>{const c=document.getElementById('conn');c.textContent='reconnecting';c.className='bad'};
</script>
</body></html>
"""
