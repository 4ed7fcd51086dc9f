// The demo page in a real browser (Debian's chromium, headless, driven by playwright-core):
// two tabs join one channel, the first publishes, the second shows the message; then the
// server is restarted by the caller and both tabs must reconnect on their own (and, the channel
// having history, say that the restarted server could not recover the gap).
//
//   node browser-demo.mjs BASE_URL SCREENSHOT.png
//
// Prints one JSON line per step on stdout ({"step":...}); reads "restarted" on stdin when the
// caller has restarted the server on the same port. Exits non-zero (with the reason on
// stderr) when an expectation fails; every wait is bounded.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

const [base, screenshot] = process.argv.slice(2);
const WAIT = 15000;
const step = (name, extra = {}) => console.log(JSON.stringify({ step: name, ...extra }));
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once('line', resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 720 } });
  const errors = [];
  const open = async (name) => {
    const page = await context.newPage();
    page.on('pageerror', (e) => errors.push(`${name}: ${e.message}`));
    await page.goto(`${base}/?channel=demo-test&name=${name}`);
    await page.waitForFunction(() => document.querySelector('#state').textContent === 'open', null, { timeout: WAIT });
    await page.waitForFunction(
      () => document.querySelector('#joined').dataset.channel === 'demo-test',
      null,
      { timeout: WAIT },
    );
    return page;
  };
  const alice = await open('alice');
  const bob = await open('bob');
  step('both tabs connected and subscribed');

  await alice.fill('#text', 'hello from the first tab');
  await alice.click('#send');
  const seen = (page, text) =>
    page.waitForFunction(
      (t) => [...document.querySelectorAll('#messages li')].some((li) => li.textContent === t),
      text,
      { timeout: WAIT },
    );
  await seen(bob, 'alice: hello from the first tab');
  await seen(alice, 'alice: hello from the first tab');
  step('the second tab shows the first tab\'s message');

  const ids = await Promise.all([alice, bob].map((p) => p.textContent('#socket-id')));
  if (ids[0] === ids[1] || ids.some((id) => !id || id === '–')) {
    throw new Error(`socket ids should be two distinct ids, got ${JSON.stringify(ids)}`);
  }

  step('waiting for a restart');
  await nextLine();
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => document.querySelector('#reconnects').textContent === '1', null, { timeout: WAIT });
    await page.waitForFunction(() => document.querySelector('#state').textContent === 'open', null, { timeout: WAIT });
  }
  // The channel keeps history (--history), but the restarted server has a new epoch: the page
  // says the gap could not be recovered.
  await alice.waitForFunction(
    () => document.querySelector('#log').textContent.includes('could not recover'),
    null,
    { timeout: WAIT },
  );
  await bob.fill('#text', 'back after the restart');
  await bob.click('#send');
  await seen(alice, 'bob: back after the restart');
  step('both tabs reconnected and resubscribed');

  await alice.screenshot({ path: screenshot });
  step('screenshot', { path: screenshot });
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
} catch (e) {
  console.error(`browser-demo: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  lines.close();
}
