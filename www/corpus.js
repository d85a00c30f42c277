// The demo's canned corpus, written for the demo: prompts, each with answers assembled from
// parts whose style a simulated user can like or dislike (concise or long, with or without a
// code example, with or without pleasantries). Every answer carries the style attributes it
// was built from, so a simulated user's taste over them is known exactly.

const TOPICS = [
  {
    prompt: "How do I reverse a list in Python?",
    short: "Use slicing: items[::-1] returns a reversed copy.",
    long: "There are a few ways. Slicing with items[::-1] returns a new reversed list, items.reverse() reverses in place and returns None, and reversed(items) gives a lazy iterator, handy in loops.",
    code: "```python\nnums = [1, 2, 3]\nprint(nums[::-1])  # [3, 2, 1]\n```",
  },
  {
    prompt: "What is the difference between let and const in JavaScript?",
    short: "const bindings cannot be reassigned; let bindings can.",
    long: "Both are block-scoped. A const binding must be initialised and can never be reassigned, though the object it points to can still change; let allows reassignment. Prefer const and reach for let when a value really changes.",
    code: "```js\nconst a = [1];\na.push(2);   // fine\nlet b = 1;\nb = 2;       // fine\n```",
  },
  {
    prompt: "How can I read a file line by line in Rust?",
    short: "Wrap the File in a BufReader and iterate over .lines().",
    long: "Open the file with File::open, wrap it in std::io::BufReader so reads are buffered, then call .lines(), which yields io::Result<String> for each line; handle or propagate each error.",
    code: "```rust\nlet f = BufReader::new(File::open(\"log.txt\")?);\nfor line in f.lines() { println!(\"{}\", line?); }\n```",
  },
  {
    prompt: "Why is my SQL query slow?",
    short: "Check the plan with EXPLAIN and add an index on the filtered columns.",
    long: "Start with EXPLAIN ANALYZE to see where time goes. Sequential scans over large tables usually mean a missing index on the columns in WHERE or JOIN; also look for functions on indexed columns and for returning far more rows than needed.",
    code: "```sql\nEXPLAIN ANALYZE SELECT * FROM orders WHERE customer_id = 42;\nCREATE INDEX ON orders (customer_id);\n```",
  },
  {
    prompt: "How do I center a div with CSS?",
    short: "Make the parent a flex container with justify-content and align-items set to center.",
    long: "The most robust way today is flexbox or grid on the parent. With flexbox set display: flex, justify-content: center and align-items: center; with grid, display: grid and place-items: center. Give the parent a height.",
    code: "```css\n.parent { display: grid; place-items: center; min-height: 100vh; }\n```",
  },
  {
    prompt: "What does git rebase do?",
    short: "It replays your commits on top of another branch, giving a linear history.",
    long: "Rebase takes the commits of your branch and re-applies them one by one on a new base, usually the latest main. History becomes linear, but the commits get new hashes, so avoid rebasing branches others have pulled.",
    code: "```sh\ngit fetch origin\ngit rebase origin/main\n```",
  },
  {
    prompt: "How do I make an HTTP request in Go?",
    short: "Call http.Get(url), check the error, and close resp.Body when done.",
    long: "The net/http package covers most needs. http.Get returns a response and an error; always check the error, defer resp.Body.Close(), and read the body with io.ReadAll. For timeouts build an http.Client with a Timeout.",
    code: "```go\nresp, err := http.Get(\"https://example.org\")\nif err != nil { return err }\ndefer resp.Body.Close()\n```",
  },
  {
    prompt: "How do I remove duplicates from an array in JavaScript?",
    short: "Spread a Set: [...new Set(items)].",
    long: "A Set keeps one copy of each value, so converting to a Set and back removes duplicates while keeping first-seen order. For arrays of objects, deduplicate by a key with a Map instead.",
    code: "```js\nconst unique = [...new Set([1, 1, 2, 3, 3])]; // [1, 2, 3]\n```",
  },
  {
    prompt: "What is a race condition?",
    short: "A bug where the result depends on the timing of concurrent operations.",
    long: "A race condition happens when two threads or tasks touch shared state without coordination and the outcome depends on which runs first. Typical fixes are locks, atomic operations, or designs that avoid sharing mutable state.",
    code: "```python\nwith lock:\n    counter += 1\n```",
  },
  {
    prompt: "How do I parse JSON in Python?",
    short: "json.loads(text) for strings, json.load(f) for open files.",
    long: "The standard json module parses into dicts, lists, strings, numbers, booleans and None. Use json.loads on a string and json.load on a file object; catch json.JSONDecodeError for malformed input.",
    code: "```python\nimport json\ndata = json.loads('{\"a\": 1}')\n```",
  },
  {
    prompt: "What is the difference between a process and a thread?",
    short: "Processes have separate memory; threads share their process's memory.",
    long: "A process is an isolated program with its own address space; threads are units of execution inside one process that share its memory and resources. Threads are cheaper to create and communicate through shared memory, which also makes them easier to get wrong.",
    code: "```python\nthreading.Thread(target=work).start()\nmultiprocessing.Process(target=work).start()\n```",
  },
  {
    prompt: "How do I undo the last git commit?",
    short: "git reset --soft HEAD~1 undoes it and keeps your changes staged.",
    long: "If the commit is only local, git reset --soft HEAD~1 moves the branch back one commit and keeps the changes staged; --hard would discard them. If you already pushed, prefer git revert, which adds a new commit undoing the old one.",
    code: "```sh\ngit reset --soft HEAD~1\n```",
  },
  {
    prompt: "How do I sort a dictionary by value in Python?",
    short: "sorted(d.items(), key=lambda kv: kv[1]) gives the pairs in value order.",
    long: "Dictionaries keep insertion order, so sort the items by value and build a new dict from them. Pass reverse=True for descending order, and use operator.itemgetter(1) if you prefer it to a lambda.",
    code: "```python\nby_value = dict(sorted(d.items(), key=lambda kv: kv[1]))\n```",
  },
  {
    prompt: "What is memoization?",
    short: "Caching a function's results so repeated calls with the same input are free.",
    long: "Memoization stores the result of a pure function for each input it has seen and returns the stored value on repeated calls. It turns exponential recursions such as naive Fibonacci into linear ones, at the cost of memory.",
    code: "```python\nfrom functools import lru_cache\n@lru_cache(maxsize=None)\ndef fib(n): return n if n < 2 else fib(n-1) + fib(n-2)\n```",
  },
  {
    prompt: "How do I handle errors in async JavaScript?",
    short: "Wrap await calls in try/catch, or attach .catch to the promise.",
    long: "With async/await, a rejected promise throws at the await, so a try/catch around it handles the error. Without await, attach .catch. Unhandled rejections surface as warnings or crashes, so handle them at the boundary.",
    code: "```js\ntry {\n  const r = await fetch(url);\n} catch (e) {\n  console.error(e);\n}\n```",
  },
  {
    prompt: "What is Big O notation?",
    short: "A way to describe how an algorithm's cost grows with input size.",
    long: "Big O gives an upper bound on growth, ignoring constants: O(1) constant, O(log n) logarithmic, O(n) linear, O(n log n) for good sorts, O(n^2) for nested loops. It compares how algorithms scale, not their speed on small inputs.",
    code: "```python\nfor x in items:        # O(n)\n    for y in items:    # O(n^2) overall\n        pass\n```",
  },
];

const OPENERS = [
  { text: "", friendly: 0 },
  { text: "Great question! ", friendly: 1 },
  { text: "Happy to help with that! ", friendly: 1 },
];
const CLOSERS = [
  { text: "", friendly: 0 },
  { text: " Hope this helps, and good luck!", friendly: 1 },
  { text: " Let me know if you would like more detail.", friendly: 1 },
];

/** All answers to a topic: every combination of length, code example and pleasantries. */
function answersFor(topic, t) {
  const out = [];
  for (const long of [0, 1]) {
    for (const code of [0, 1]) {
      for (const [oi, o] of OPENERS.entries()) {
        for (const [ci, c] of CLOSERS.entries()) {
          // Long answers announce themselves, as explanatory answers often do; it also gives
          // a model of hashed n-grams something shared across prompts to learn length from.
          const body = long ? `In more detail: ${topic.long}` : topic.short;
          const text = `${o.text}${body}${c.text}${code ? "\n\n" + topic.code : ""}`;
          out.push({
            id: `t${t}-l${long}-c${code}-o${oi}-e${ci}`,
            text,
            attributes: { long, code, friendly: Math.min(1, o.friendly + c.friendly) },
          });
        }
      }
    }
  }
  return out;
}

/** `{ prompt, answers }` for every topic. */
export const CORPUS = TOPICS.map((topic, t) => ({ topic: t, prompt: topic.prompt, answers: answersFor(topic, t) }));

/** Topics the demo trains on, and those it measures agreement on (never trained on). */
export const TRAIN_TOPICS = CORPUS.filter((_, i) => i % 4 !== 3);
export const EVAL_TOPICS = CORPUS.filter((_, i) => i % 4 === 3);
