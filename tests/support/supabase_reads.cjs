// Runs the frontend's kind of supabase-js (postgrest-js) reads against a base URL and prints, per read, what the
// client returned and the exact request it sent. Usage: node supabase_reads.cjs BASE_URL ADDRESS OTHER_ADDRESS
const { PostgrestClient } = require('@supabase/postgrest-js');

const [base, address, other] = process.argv.slice(2);
const sent = [];
const recordingFetch = async (url, init) => {
  const headers = Object.fromEntries(new Headers(init && init.headers).entries());
  sent.push({ url: String(url), method: (init && init.method) || 'GET', headers });
  return fetch(url, init);
};
const db = new PostgrestClient(`${base}/rest/v1`, {
  fetch: recordingFetch,
  headers: { apikey: 'anon-key', Authorization: 'Bearer anon-key' },
});

const reads = {
  history: () => db.from('transactions').select('*').eq('user_address', address)
    .order('block_timestamp', { ascending: false }).range(0, 9),
  single: () => db.from('balances').select('*').eq('user_address', address).single(),
  singleMissing: () => db.from('balances').select('*').eq('user_address', other).single(),
  maybeMissing: () => db.from('balances').select('*').eq('user_address', other).maybeSingle(),
  countHead: () => db.from('transactions').select('*', { count: 'exact', head: true }).eq('user_address', address),
  countRows: () => db.from('transactions').select('tx_hash', { count: 'exact' }).order('block_number').limit(2),
  inList: () => db.from('transactions').select('tx_hash,tx_type,log_index').in('tx_type', ['MINT', 'BURN'])
    .order('block_number', { ascending: true }).order('log_index', { ascending: true }),
  isNull: () => db.from('transactions').select('tx_hash,log_index').is('bitcoin_address', null)
    .order('tx_hash').order('log_index').limit(3),
  range: () => db.from('balances').select('user_address,last_sats').gt('last_sats', 0).lte('last_sats', 5000)
    .order('user_address'),
  neq: () => db.from('emergency_burns').select('user_address,burned_amount').neq('user_address', address)
    .order('user_address'),
  insert: () => db.from('transactions').insert({ tx_hash: '0x00' }),
  update: () => db.from('balances').update({ last_sats: 1 }).eq('user_address', address),
  unknownColumn: () => db.from('transactions').select('password'),
  unknownTable: () => db.from('users').select('*'),
};

(async () => {
  const out = {};
  for (const [name, read] of Object.entries(reads)) {
    sent.length = 0;
    const { data, error, count, status } = await read();
    out[name] = { data, error, count, status, sent: sent.slice() };
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
