// Runs the explorer page's script on a stand-in DOM, hovers over every output node and prints, as
// JSON, the HTML the page put into the info box and the text it put into elements.
const fs = require('fs');
const vm = require('vm');
const html = fs.readFileSync(process.argv[2], 'utf8');
const scripts = [...html.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
const data = scripts.find((m) => m[1].includes('explorer-data'))[2];
const code = scripts.find((m) => !m[1].includes('explorer-data'))[2];
const written = {html: [], text: []};
function element() {  // any property is another element-like stub; any call returns one
  const store = {};
  return new Proxy(function () {}, {
    get(_, key) {
      if (key in store) return store[key];
      if (key === Symbol.toPrimitive) return () => 0;
      if (key === Symbol.iterator) return function* () {};
      if (key === 'then') return undefined;
      return (store[key] = element());
    },
    set(_, key, value) {
      store[key] = value;
      if (key === 'innerHTML') written.html.push(String(value));
      if (key === 'textContent') written.text.push(String(value));
      return true;
    },
    apply() { return element(); },
  });
}
const ids = {};
const document = new Proxy({}, {get(_, key) {
  if (key === 'getElementById') return (id) => ids[id] || (ids[id] = element());
  return element();
}});
ids['explorer-data'] = element();
ids['explorer-data'].textContent = data;
written.text.length = 0;
const context = {document, window: {}, atob, performance, console, setTimeout,
                 requestAnimationFrame: (f) => 0};
vm.createContext(context);
vm.runInContext(code + '\n;globalThis.__hover = hover; globalThis.__D = D;', context);
const D = context.__D;
for (let node = 0; node < D.classes.length; node++) context.__hover({layer: 'output', node});
process.stdout.write(JSON.stringify({classes: D.classes, html: written.html, text: written.text}));
