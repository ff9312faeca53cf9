// The drawing page: black strokes on a transparent canvas, sent as a PNG to ./predict when the
// pen lifts. Pointer events cover the mouse, touch and pens. No libraries, nothing from a CDN.
// After an answer, "Wrong? This is a [digit] [Send]" posts the same drawing to ./feedback with the
// right digit (source "page"), stored for review.
// document.body.dataset.state: idle | busy | done | error; dataset.feedback: busy | sent | error
// (the browser test waits on them).
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const digit = document.getElementById("digit");
const confidence = document.getElementById("confidence");
const message = document.getElementById("message");
const preprocessed = document.getElementById("preprocessed");
const bars = document.getElementById("bars");
const feedback = document.getElementById("feedback");
const feedbackLabel = document.getElementById("label");
const feedbackSend = document.getElementById("send");
const feedbackMessage = document.getElementById("feedback-message");

let drawing = false;
let last = null;
let inked = false;
let request = 0;     // number of the latest prediction asked for; older answers are dropped
let answered = null; // the PNG of the drawing the shown answer is for (what a correction sends)

for (let d = 0; d < 10; d++) {
  const li = document.createElement("li");
  li.id = `bar-${d}`;
  li.innerHTML = `<span class="label">${d}</span><span class="track"><span class="fill"></span></span>` +
                 `<span class="value"></span>`;
  bars.appendChild(li);
}

function setState(state) { document.body.dataset.state = state; }

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width,
           y: (event.clientY - box.top) * pad.height / box.height };
}

function stroke(from, to) {
  ctx.lineWidth = 18;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#000";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
  inked = true;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = point(event);
  stroke(last, last);
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const here = point(event);
  stroke(last, here);
  last = here;
});

function lift() {
  if (!drawing) return;
  drawing = false;
  predict();
}
pad.addEventListener("pointerup", lift);
pad.addEventListener("pointercancel", lift);

function showBars(probabilities, best) {
  probabilities.forEach((p, d) => {
    const li = document.getElementById(`bar-${d}`);
    li.classList.toggle("top", d === best);
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
  });
}

function hideFeedback() {
  answered = null;
  feedback.hidden = true;
  feedbackMessage.textContent = "";
  delete document.body.dataset.feedback;
}

function reset(text) {
  hideFeedback();
  digit.textContent = "\u2013";
  confidence.textContent = text;
  showBars(new Array(10).fill(0), -1);
  preprocessed.hidden = true;
}

async function predict() {
  if (!inked) return;
  const mine = ++request;
  setState("busy");
  message.textContent = "";
  hideFeedback();
  try {
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const form = new FormData();
    form.append("file", blob, "drawing.png");
    const response = await fetch("predict", { method: "POST", body: form });
    const answer = await response.json();
    if (mine !== request) return;
    if (!response.ok) {
      reset("no answer");
      message.textContent = answer.detail || `error ${response.status}`;
      setState("error");
      return;
    }
    digit.textContent = String(answer.digit);
    confidence.textContent = `${(100 * answer.confidence).toFixed(1)}% sure`;
    showBars(answer.probabilities, answer.digit);
    preprocessed.src = answer.preprocessed;
    preprocessed.hidden = false;
    answered = blob;
    feedbackSend.disabled = false;
    feedback.hidden = false;
    setState("done");
  } catch (err) {
    if (mine !== request) return;
    reset("no answer");
    message.textContent = `the server did not answer (${err})`;
    setState("error");
  }
}

feedback.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!answered) return;
  const mine = request;
  feedbackSend.disabled = true;
  feedbackMessage.textContent = "sending\u2026";
  document.body.dataset.feedback = "busy";
  try {
    const form = new FormData();
    form.append("file", answered, "drawing.png");
    form.append("label", feedbackLabel.value);
    form.append("source", "page");
    const response = await fetch("feedback", { method: "POST", body: form });
    const answer = await response.json();
    if (mine !== request) return;
    if (response.ok) {
      feedbackMessage.textContent = `Thanks: saved as #${answer.id} for review`;
      document.body.dataset.feedback = "sent";        // sent once; the next drawing can be corrected again
    } else {
      feedbackMessage.textContent = typeof answer.detail === "string" ? answer.detail : `error ${response.status}`;
      document.body.dataset.feedback = "error";
      feedbackSend.disabled = false;
    }
  } catch (err) {
    if (mine !== request) return;
    feedbackMessage.textContent = `the server did not answer (${err})`;
    document.body.dataset.feedback = "error";
    feedbackSend.disabled = false;
  }
});

document.getElementById("clear").addEventListener("click", () => {
  ctx.clearRect(0, 0, pad.width, pad.height);
  inked = false;
  request++;
  message.textContent = "";
  reset("draw a digit");
  setState("idle");
});

reset("draw a digit");
