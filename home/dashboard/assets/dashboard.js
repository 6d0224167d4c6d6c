// edgepack dashboard: reads the admin JSON endpoints with the token kept in sessionStorage
// and draws with Vega-Lite (vendored). Every value from the server goes into the page as
// text (textContent), never as HTML: feature names come from uploaded manifests.
"use strict";

const KEY = "edgepack-admin-token";

let initialDevice = "";

function takeFragment() {
  // #token=...: signs in once (never sent to the server); #device=...: opens one device's view.
  const token = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  const device = /(?:^#|&)device=([^&]+)/.exec(window.location.hash);
  if (device) initialDevice = decodeURIComponent(device[1]);
  if (token) {
    sessionStorage.setItem(KEY, decodeURIComponent(token[1]));
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "-";
  if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(digits);
  return String(value);
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "-";
}

async function api(path) {
  const token = sessionStorage.getItem(KEY);
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY);
    throw new Error("the token was refused (" + response.status + "): sign in with an admin token");
  }
  if (!response.ok) throw new Error(path + " answered " + response.status + ": " + (await response.text()));
  return response.json();
}

function table(header, rows) {
  const head = el("tr", {}, ...header.map((h) => el("th", {}, h)));
  const body = rows.map((cells) => el("tr", {}, ...cells.map((c) => {
    if (c instanceof Node) return el("td", {}, c);
    return el("td", typeof c === "number" ? { class: "num" } : {}, fmt(c));
  })));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function status(text) {
  return el("span", { class: "status-" + text }, text);
}

async function chart(container, spec) {
  const box = el("div", { class: "chart" });
  container.append(box);
  await vegaEmbed(box, spec, { renderer: "svg", actions: false });
}

function renderFleet(fleet) {
  const rows = fleet.devices.map((d) => [
    d.device, when(d.last_seen), d.records,
    d.backlog === null || d.backlog === undefined ? "not reported" : d.backlog,
    d.counters.dropped ?? 0, d.counters.lost ?? 0,
    d.versions.map((v) => v.model + " v" + v.version + " (" + v.records + ")").join(", "),
    d.active ? "active" : "inactive",
  ]);
  const box = document.getElementById("fleet-table");
  box.replaceChildren(
    el("p", {}, fleet.devices.length + " devices, " + fleet.active + " active, " + fleet.records + " records"),
    table(["device", "last seen", "records", "backlog", "dropped", "lost", "versions", "state"], rows),
  );
}

function histogramValues(name, entry) {
  const values = [];
  if (entry.bins) {
    const { edges, baseline, live } = entry.bins;
    const baseTotal = baseline.reduce((a, b) => a + b, 0) || 1;
    const liveTotal = live.reduce((a, b) => a + b, 0) || 1;
    const label = (i) => i === 0 ? "< " + fmt(edges[0], 2) : i === live.length - 1 ? "> " + fmt(edges[edges.length - 1], 2)
      : fmt(edges[i - 1], 2) + "–" + fmt(edges[i], 2);
    for (let i = 0; i < live.length; i++) {
      const base = i === 0 || i === live.length - 1 ? 0 : baseline[i - 1];
      values.push({ bin: label(i), order: i, source: "baseline", share: base / baseTotal });
      values.push({ bin: label(i), order: i, source: "live", share: live[i] / liveTotal });
    }
  } else if (entry.categories) {
    entry.categories.names.forEach((c, i) => {
      values.push({ bin: c, order: i, source: "baseline", share: entry.categories.baseline[i] });
      values.push({ bin: c, order: i, source: "live", share: entry.categories.live[i] });
    });
  }
  return values;
}

async function renderModel(container, model, since, device) {
  const scope = device ? "&device=" + encodeURIComponent(device) : "";
  const report = await api("/v1/report?model=" + encodeURIComponent(model) + "&since=" + encodeURIComponent(since) + scope);
  const section = el("section", { class: "model", "data-model": model });
  container.append(section);
  section.append(el("h2", {}, "Model " + model + " — ", status(report.status)));
  for (const version of report.versions) {
    section.append(el("h3", {}, "Version " + version.version + " (" + version.task + "), " + version.records + " records — ", status(version.status)));
    for (const [sha, bundle] of Object.entries(version.bundles)) {
      section.append(el("p", {}, "bundle " + sha.slice(0, 12) + ": " + bundle.records + " records, baseline of " + bundle.reference_rows + " rows"));
      const test = (f) => !f.test ? "-" : f.test + (f.p_value !== undefined && f.p_value !== null ? " p=" + f.p_value.toExponential(2) : " d=" + fmt(f.distance));
      const entries0 = Object.entries(bundle.features);
      if (bundle.prediction) entries0.push(["(prediction)", bundle.prediction]);
      const rows = entries0.map(([name, f]) => [name, f.kind, f.count, f.psi, test(f), fmt(f.missing_rate), status(f.status)]);
      section.append(el("h4", {}, "Drift"), table(["feature", "kind", "n", "PSI", "test", "missing", "status"], rows));
      const flagRows = Object.entries(bundle.flags).map(([flag, f]) => [flag, f.count, f.rate, status(f.status)]);
      section.append(el("h4", {}, "Guardrail flags"),
        flagRows.length ? table(["flag", "records", "rate", "status"], flagRows) : el("p", {}, "no guardrail flags"));
      const charts = el("div", { class: "charts" });
      section.append(el("h4", {}, "Histograms: baseline against live"), charts);
      const entries = Object.entries(bundle.features);
      if (bundle.prediction) entries.push(["(prediction)", bundle.prediction]);
      for (const [name, entry] of entries) {
        await chart(charts, {
          $schema: "https://vega.github.io/schema/vega-lite/v4.json",
          title: name, width: 260, height: 140,
          data: { values: histogramValues(name, entry) },
          // Baseline and live overlap in each bin (not stacked): where they differ is the drift.
          mark: { type: "bar", opacity: 0.55 },
          encoding: {
            x: { field: "bin", type: "nominal", sort: { field: "order" }, title: null },
            y: { field: "share", type: "quantitative", title: "share", stack: null },
            color: { field: "source", type: "nominal", scale: { domain: ["baseline", "live"], range: ["#8c8c8c", "#1f77b4"] } },
          },
        });
      }
      const flagSeries = [];
      for (const [flag, f] of Object.entries(bundle.flags)) {
        for (const point of f.series) flagSeries.push({ time: point.bucket * 1000, flag, rate: point.rate });
      }
      if (flagSeries.length) {
        const box = el("div", { class: "charts" });
        section.append(el("h4", {}, "Flag rates over time"), box);
        await chart(box, {
          $schema: "https://vega.github.io/schema/vega-lite/v4.json",
          title: "flag rates", width: 560, height: 160, data: { values: flagSeries },
          mark: { type: "line", point: true },
          encoding: { x: { field: "time", type: "temporal", title: null }, y: { field: "rate", type: "quantitative" }, color: { field: "flag", type: "nominal" } },
        });
      }
    }
    const live = version.live;
    section.append(el("h4", {}, "Live metrics"));
    if (!live.labeled) {
      section.append(el("p", {}, "no labeled records in the window"));
      continue;
    }
    const overall = Object.entries(live.overall).filter(([k]) => k !== "count").map(([k, v]) => k + " " + fmt(v)).join(", ");
    section.append(el("p", { class: "live-overall" }, live.labeled + " labeled records: " + overall));
    const metricNames = version.task === "regression" ? ["mae", "rmse"] : ["accuracy", "roc_auc"];
    const values = [];
    for (const point of live.series) {
      for (const m of metricNames) if (point[m] !== undefined && point[m] !== null) values.push({ time: point.bucket * 1000, metric: m, value: point[m], n: point.count });
    }
    const box = el("div", { class: "charts" });
    section.append(box);
    await chart(box, {
      $schema: "https://vega.github.io/schema/vega-lite/v4.json",
      title: "live " + metricNames.join(" / ") + " over time", width: 560, height: 160, data: { values },
      mark: { type: "line", point: true },
      encoding: { x: { field: "time", type: "temporal", title: null }, y: { field: "value", type: "quantitative" }, color: { field: "metric", type: "nominal" } },
    });
  }
}

async function load() {
  const message = document.getElementById("message");
  message.textContent = "";
  document.body.dataset.state = "loading";
  try {
    const since = document.getElementById("since").value;
    const picker = document.getElementById("device");
    const device = initialDevice || picker.value;
    initialDevice = "";
    const fleet = await api("/v1/fleet");
    renderFleet(fleet);
    picker.replaceChildren(el("option", { value: "" }, "whole fleet"), ...fleet.devices.map((d) => el("option", { value: d.device }, d.device)));
    picker.value = device;
    const { models } = await api("/v1/models");
    const container = document.getElementById("models");
    container.replaceChildren();
    for (const model of Object.keys(models)) {
      if (models[model].length) await renderModel(container, model, since, device);
      else container.append(el("p", {}, "model " + model + ": records but no stored manifest (upload it with POST /v1/bundles)"));
    }
    document.body.dataset.state = "rendered";
  } catch (error) {
    message.textContent = String(error.message || error);
    document.body.dataset.state = "error";
    showSignin();
  }
}

function showSignin() {
  const signedIn = Boolean(sessionStorage.getItem(KEY));
  document.getElementById("signin").hidden = signedIn;
  document.getElementById("controls").hidden = !signedIn;
}

function main() {
  takeFragment();
  document.getElementById("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("token").value.trim());
    showSignin();
    load();
  });
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showSignin();
    document.getElementById("models").replaceChildren();
    document.getElementById("fleet-table").replaceChildren();
  });
  document.getElementById("since").addEventListener("change", load);
  document.getElementById("device").addEventListener("change", load);
  showSignin();
  if (sessionStorage.getItem(KEY)) load();
  else document.body.dataset.state = "signed-out";
}

main();
