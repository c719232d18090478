/* The coordinator dashboard: the latest release of the region's signed indicators.
 *
 * Plain JavaScript, no framework, no build step, nothing loaded from elsewhere. It reads
 * GET /api/releases/latest ({"release": n, "statements": [{"statement": {...}, "kid",
 * "signature"}, ...]}) and listens to GET /api/stream (Server-Sent Events: "release" with
 * {"release": n}); each announced release is fetched and drawn again.
 *
 * Figures are numbers or the string "suppressed" (disclosure control). A suppressed figure
 * is never drawn as zero: tables show a hatched "suppressed" cell, charts a gap with a
 * marker. Where the region allows partner breakdowns, a statement also holds partner tables
 * (dimension "partner", each row's country in "countries") and partner statistics and
 * shares (a "partner" field, "area" its country): they appear as a table by partner under
 * the indicator's table, partners grouped by country, and nowhere else; a release without
 * them shows nothing of the kind. Hooks for tests: data-chart / data-points / data-gaps on
 * charts, data-suppressed on suppressed table cells, data-headline / data-value on headline
 * figures, data-dimension="partner" / data-partner / data-country on partner tables.
 */
"use strict";

(() => {
  const SUPPRESSED = "suppressed";
  const REGION = "region";
  const COUNTRY_DIMENSION = "country";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const LATEST_URL = "/api/releases/latest";
  const STREAM_URL = "/api/stream";
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  const COUNTRIES = {
    AO: "Angola", BW: "Botswana", KM: "Comoros", CD: "DR Congo", SZ: "Eswatini",
    LS: "Lesotho", MG: "Madagascar", MW: "Malawi", MU: "Mauritius", MZ: "Mozambique",
    NA: "Namibia", SC: "Seychelles", ZA: "South Africa", TZ: "Tanzania", ZM: "Zambia",
    ZW: "Zimbabwe",
  };

  // Codes whose plain "underscores to spaces" reading would be poor; others fall back.
  const LABELS = {
    police_or_law_enforcement: "Police or law enforcement",
    intimate_partner_or_former_partner: "Intimate partner or former partner",
    family_other_than_spouse_or_caregiver: "Family (not spouse or caregiver)",
    family_friend_or_neighbour: "Family friend or neighbour",
    other_refugee_idp_or_returnee: "Other refugee, IDP or returnee",
    brothel_owner_or_manager: "Brothel owner or manager",
    security_guard_or_bouncer: "Security guard or bouncer",
    teacher_or_school_official: "Teacher or school official",
    supervisor_or_employer: "Supervisor or employer",
    cotenant_or_housemate: "Co-tenant or housemate",
    non_gbv: "Not gender-based violence",
    non_payment: "Non-payment by a client",
    extortion_or_bribery: "Extortion or bribery",
    denial_of_health_services: "Denial of health services",
    health_pep: "Health: PEP",
    legal_aid: "Legal aid",
    accepted_case_number_given: "Accepted, case number given",
    perpetrator_was_police: "Refused: perpetrator was police",
    refused: "Refused",
    count: "Count",
  };

  const INDICATORS = {
    "incidents": "Incidents",
    "incidents-by-gbvims-type": "Incidents by GBVIMS core type",
    "incidents-by-violence-type": "Incidents by violence type",
    "incidents-by-perpetrator": "Incidents by perpetrator",
    "police-share": "Incidents committed by police",
    "time-to-first-response": "Time to first response (hours)",
    "referrals-made-by-service": "Referrals made, by service",
    "referrals-accepted-by-service": "Referrals accepted, by service",
    "referrals-completed-by-service": "Referrals completed, by service",
    "police-reports-filed": "Police reports filed",
    "police-responses": "Police responses to reports",
    "court-cases-opened": "Court cases opened",
    "court-cases-won": "Court cases won",
    "partners-reporting": "Partners reporting incidents",
  };
  const ORDER = Object.keys(INDICATORS);
  const NOTES = {
    "incidents-by-violence-type":
      "An incident can involve several types: it counts once under each.",
    "incidents-by-perpetrator":
      "An incident can have several perpetrators: it counts once under each.",
    "time-to-first-response":
      "Median and 90th percentile are published only where at least k cases are.",
  };

  // Okabe–Ito colours (colour-blind safe), the region in near-black.
  const PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
    "#8C564B", "#7F7F7F"];
  const REGION_COLOUR = "#1b1b1b";

  const state = {
    model: null,
    period: null, // null: follow the latest month
    area: REGION,
    loading: null,
    again: false,
  };

  // ------------------------------------------------------------------ small helpers

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  // A table of countries (the default when "dimension" is left out) or of partners.
  const isCountryTable = (t) => (t.dimension || COUNTRY_DIMENSION) === COUNTRY_DIMENSION;
  // A statistic or share of one partner (the others are of a country or the region).
  const ofPartner = (x) => x.partner !== undefined && x.partner !== null;

  function label(code) {
    if (Object.prototype.hasOwnProperty.call(LABELS, code)) return LABELS[code];
    const text = String(code).replace(/_/g, " ");
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function areaName(code) {
    if (code === REGION) return "Region";
    return COUNTRIES[code] || code;
  }

  function indicatorTitle(id) {
    return INDICATORS[id] || label(id.replace(/-/g, "_"));
  }

  function monthName(period) {
    const m = /^(\d{4})-(\d{2})$/.exec(period || "");
    return m ? `${MONTHS[Number(m[2]) - 1]} ${m[1]}` : String(period);
  }

  function shortMonth(period) {
    const m = /^(\d{4})-(\d{2})$/.exec(period || "");
    return m ? `${MONTHS[Number(m[2]) - 1]} '${m[1].slice(2)}` : String(period);
  }

  function fmt(n) {
    return isNum(n) ? n.toLocaleString("en-GB") : String(n);
  }

  function fmtHours(h) {
    return `${fmt(Math.round(h * 10) / 10)} h`;
  }

  function fmtShare(p) {
    return `${(p * 100).toFixed(1)} %`;
  }

  function setAttrs(node, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
  }

  function append(node, children) {
    for (const c of [].concat(children ?? [])) {
      if (c === null || c === undefined || c === false) continue;
      node.append(typeof c === "object" ? c : String(c));
    }
  }

  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function s(tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function replace(id, children) {
    const node = document.getElementById(id);
    node.replaceChildren();
    append(node, children);
    return node;
  }

  // ------------------------------------------------------------------ the release

  function buildModel(payload) {
    const statements = (payload.statements || []).map((w) => ({ ...w.statement, kid: w.kid }));
    const byId = new Map(statements.map((st) => [st.indicator, st]));
    const periods = new Set();
    const areas = new Set();
    let partners = false;
    for (const st of statements) {
      for (const t of st.tables || []) {
        periods.add(t.period);
        if (isCountryTable(t)) t.rows.forEach((r) => areas.add(r));
        else partners = true;
      }
      for (const x of [...(st.stats || []), ...(st.shares || [])]) {
        periods.add(x.period);
        if (ofPartner(x)) partners = true;
        else if (x.area !== REGION) areas.add(x.area);
      }
    }
    const sorted = [...periods].sort();
    return {
      number: payload.release,
      statements,
      byId,
      header: statements[0] || null,
      periods: sorted,
      latest: sorted.length ? sorted[sorted.length - 1] : null,
      areas: [...areas].sort(),
      partners,
    };
  }

  function tableOf(m, indicator, period) {
    const st = m.byId.get(indicator);
    return (st && (st.tables || []).find((t) => t.period === period && isCountryTable(t))) || null;
  }

  // A count indicator's total for one area; no table (or no row) means nothing was counted.
  function totalOf(m, indicator, period, area) {
    const t = tableOf(m, indicator, period);
    if (!t) return 0;
    if (area === REGION) return t.total;
    const i = t.rows.indexOf(area);
    return i < 0 ? 0 : t.row_totals[i];
  }

  function breakdownOf(m, indicator, period, area) {
    const t = tableOf(m, indicator, period);
    if (!t) return [];
    const i = t.rows.indexOf(area);
    return t.columns.map((key, j) => ({
      key,
      value: area === REGION ? t.column_totals[j] : i < 0 ? 0 : t.cells[i][j],
    }));
  }

  function entryOf(m, indicator, field, period, area) {
    const st = m.byId.get(indicator);
    return (st && (st[field] || []).find((x) => x.period === period && x.area === area && !ofPartner(x))) || null;
  }

  // Sum of published figures; `suppressed` says how many were left out.
  function sumOf(values) {
    let sum = 0;
    let suppressed = 0;
    for (const v of values) {
      if (isNum(v)) sum += v;
      else if (v === SUPPRESSED) suppressed += 1;
    }
    return { sum, suppressed };
  }

  // Chart value of a median / p90: null is a plain gap (no cases), "suppressed" a marked gap.
  function statPoint(st, field, k) {
    if (!st) return null;
    if (isNum(st[field])) return st[field];
    if (st.n === SUPPRESSED || (isNum(st.n) && st.n > 0 && st.n < k)) return SUPPRESSED;
    return null;
  }

  function sharePoint(sh) {
    if (!sh) return null;
    if (isNum(sh.share)) return sh.share * 100;
    if (sh.police === SUPPRESSED || sh.incidents === SUPPRESSED) return SUPPRESSED;
    return null;
  }

  function areaColour(m, area) {
    if (area === REGION) return REGION_COLOUR;
    const i = m.areas.indexOf(area);
    return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
  }

  function areaDash(m, area) {
    const i = m.areas.indexOf(area);
    return area !== REGION && i >= PALETTE.length ? "6 3" : null;
  }

  // ------------------------------------------------------------------ legend

  function suppressionLegend(k) {
    return h("div", { class: "legend", role: "note" }, [
      h("span", { class: "legend-item" }, [
        h("span", { class: "swatch supp", "aria-hidden": "true" }),
        h("span", {
          text: `Suppressed: fewer than ${k} cases, or hidden so another small figure ` +
            "cannot be worked out.",
        }),
      ]),
      h("span", { class: "legend-item" }, [
        h("span", { class: "swatch np", "aria-hidden": "true", text: "—" }),
        h("span", { text: "Not published (no cases, or too few for a median)." }),
      ]),
      h("span", { class: "legend-item" }, [
        h("span", { class: "marker-key", "aria-hidden": "true", text: "×" }),
        h("span", { text: "In charts, a suppressed value is a gap with a × under the axis, never a zero." }),
      ]),
    ]);
  }

  // ------------------------------------------------------------------ headline figures

  function card(key, title, latest, all) {
    return h("div", { class: "card", "data-headline": key }, [
      h("dt", { text: title }),
      h("dd", { class: "latest" }, latest),
      h("dd", { class: "all" }, all),
    ]);
  }

  function valueSpan(which, value, text, extra) {
    const supp = value === SUPPRESSED;
    return h("span", {
      class: `${which === "latest" ? "big" : "small"}${supp ? " supp-inline" : ""}`,
      "data-period": which,
      "data-value": value,
      ...(extra || {}),
      text,
    });
  }

  function countCard(m, key, title, indicator) {
    const latest = totalOf(m, indicator, m.latest, REGION);
    const { sum, suppressed } = sumOf(m.periods.map((p) => totalOf(m, indicator, p, REGION)));
    const allText = suppressed ? `at least ${fmt(sum)}` : fmt(sum);
    return card(key, title,
      [valueSpan("latest", latest, fmt(latest)), h("span", { class: "when", text: ` in ${monthName(m.latest)}` })],
      [valueSpan("all", sum, allText, { "data-partial": suppressed || null }),
        h("span", {
          class: "when",
          text: " over all months" + (suppressed ? ` (${suppressed} month${suppressed > 1 ? "s" : ""} suppressed)` : ""),
        })]);
  }

  function shareCard(m) {
    const sh = entryOf(m, "police-share", "shares", m.latest, REGION);
    let latest;
    if (sh && isNum(sh.share)) latest = valueSpan("latest", sh.share, fmtShare(sh.share));
    else if (sh && (sh.police === SUPPRESSED || sh.incidents === SUPPRESSED)) latest = valueSpan("latest", SUPPRESSED, "suppressed");
    else latest = valueSpan("latest", "", "—", { title: "no incidents this month" });
    let police = 0;
    let incidents = 0;
    let left = 0;
    const st = m.byId.get("police-share");
    for (const x of (st && st.shares) || []) {
      if (x.area !== REGION) continue;
      if (isNum(x.police) && isNum(x.incidents)) {
        police += x.police;
        incidents += x.incidents;
      } else left += 1;
    }
    const all = incidents > 0
      ? valueSpan("all", `${police}/${incidents}`, fmtShare(police / incidents), { "data-partial": left || null })
      : valueSpan("all", "", "—");
    const note = incidents > 0
      ? ` over all months (${fmt(police)} of ${fmt(incidents)} incidents` +
        (left ? `; ${left} month${left > 1 ? "s" : ""} with suppressed figures left out)` : ")")
      : " over all months";
    return card("police-share", "Incidents committed by police",
      [latest, h("span", { class: "when", text: ` in ${monthName(m.latest)}` })],
      [all, h("span", { class: "when", text: note })]);
  }

  function responseCard(m, field, key, title) {
    const k = m.header.k;
    const st = entryOf(m, "time-to-first-response", "stats", m.latest, REGION);
    const point = statPoint(st, field, k);
    const latest = isNum(point)
      ? valueSpan("latest", point, fmtHours(point))
      : point === SUPPRESSED
        ? valueSpan("latest", SUPPRESSED, "suppressed")
        : valueSpan("latest", "", "—", { title: "no first responses this month" });
    // A median over all months cannot be worked out from monthly medians: show their range.
    const monthly = m.periods
      .map((p) => entryOf(m, "time-to-first-response", "stats", p, REGION))
      .filter((x) => x && isNum(x[field]))
      .map((x) => x[field]);
    const cases = sumOf(m.periods.map((p) => {
      const x = entryOf(m, "time-to-first-response", "stats", p, REGION);
      return x ? x.n : 0;
    }));
    const all = monthly.length
      ? valueSpan("all", `${Math.min(...monthly)}-${Math.max(...monthly)}`,
        `${fmt(Math.min(...monthly))}–${fmtHours(Math.max(...monthly))}`,
        { "data-min": Math.min(...monthly), "data-max": Math.max(...monthly) })
      : valueSpan("all", "", "—");
    const n = isNum(st && st.n) ? `, ${fmt(st.n)} cases` : "";
    return card(key, title,
      [latest, h("span", { class: "when", text: ` in ${monthName(m.latest)}${n}` })],
      [all, h("span", {
        class: "when",
        text: ` range of monthly values (${cases.suppressed ? "at least " : ""}${fmt(cases.sum)} cases over all months)`,
      })]);
  }

  function renderHeadlines(m) {
    const cards = [
      countCard(m, "incidents", "Incidents", "incidents"),
      shareCard(m),
      responseCard(m, "median", "response-median", "Time to first response, median"),
      responseCard(m, "p90", "response-p90", "Time to first response, 90th percentile"),
      countCard(m, "referrals-made", "Referrals made", "referrals-made-by-service"),
      countCard(m, "referrals-completed", "Referrals completed", "referrals-completed-by-service"),
      countCard(m, "police-reports", "Police reports filed", "police-reports-filed"),
      countCard(m, "court-opened", "Court cases opened", "court-cases-opened"),
      countCard(m, "court-won", "Court cases won", "court-cases-won"),
    ];
    replace("headline-cards", h("dl", { class: "cards" }, cards));
  }

  // ------------------------------------------------------------------ charts

  function niceMax(max) {
    if (!(max > 0)) return 1;
    const step = niceStep(max / 4);
    return Math.ceil(max / step) * step;
  }

  function niceStep(raw) {
    const mag = 10 ** Math.floor(Math.log10(raw));
    for (const f of [1, 2, 2.5, 5, 10]) if (raw <= f * mag) return f * mag;
    return 10 * mag;
  }

  function chartFigure(id, title, svgNode, points, gaps, legendItems, extra) {
    return h("figure", { class: "chart", "data-chart": id, "data-points": points, "data-gaps": gaps }, [
      h("figcaption", { text: title }),
      svgNode,
      legendItems && legendItems.length ? h("ul", { class: "series-legend" }, legendItems) : null,
      extra || null,
    ]);
  }

  function seriesKey(name, colour, dash, width) {
    return h("li", {}, [
      s("svg", { width: 22, height: 10, viewBox: "0 0 22 10", "aria-hidden": "true" }, [
        s("line", { x1: 1, y1: 5, x2: 21, y2: 5, stroke: colour, "stroke-width": width || 2, "stroke-dasharray": dash }),
      ]),
      h("span", { text: name }),
    ]);
  }

  /* A line chart over the months. series: [{name, colour, dash, width, values}] where a
   * value is a number, "suppressed" (a gap and a × under the axis) or null (a gap). */
  function lineChart({ id, title, periods, series, unit, yMax, format }) {
    const W = 640;
    const H = 236;
    const L = 46;
    const R = 30;
    const T = 14;
    const plotH = 176;
    const base = T + plotH;
    const n = periods.length;
    const numbers = series.flatMap((se) => se.values.filter(isNum));
    const max = yMax || niceMax(Math.max(0, ...numbers));
    const x = (i) => (n <= 1 ? L + (W - L - R) / 2 : L + (i * (W - L - R)) / (n - 1));
    const y = (v) => base - (v / max) * plotH;
    const grid = [];
    const step = niceStep(max / 4);
    for (let v = 0; v <= max + 1e-9; v += step) {
      grid.push(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" }));
      grid.push(s("text", { x: L - 6, y: y(v) + 4, class: "tick", "text-anchor": "end", text: format(v) }));
    }
    const every = Math.max(1, Math.ceil(n / 12));
    const xLabels = periods.map((p, i) => (i % every === 0 || i === n - 1
      ? s("text", { x: x(i), y: base + 16, class: "tick", "text-anchor": "middle", text: shortMonth(p) })
      : null));
    const lines = [];
    const dots = [];
    const marks = [];
    let points = 0;
    let gaps = 0;
    series.forEach((se, si) => {
      let run = [];
      const flush = () => {
        if (run.length > 1) {
          lines.push(s("polyline", {
            points: run.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" "),
            fill: "none", stroke: se.colour, "stroke-width": se.width || 2, "stroke-dasharray": se.dash,
            "stroke-linejoin": "round",
          }));
        }
        run = [];
      };
      se.values.forEach((v, i) => {
        if (isNum(v)) {
          points += 1;
          run.push([x(i), y(v)]);
          dots.push(s("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: se.width > 2 ? 3.5 : 2.5, fill: se.colour }, [
            s("title", { text: `${se.name}, ${monthName(periods[i])}: ${format(v)}${unit || ""}` }),
          ]));
        } else {
          flush();
          if (v === SUPPRESSED) {
            gaps += 1;
            const offset = (si - (series.length - 1) / 2) * 5;
            marks.push(s("text", {
              x: (x(i) + offset).toFixed(1), y: base + 34, class: "gap-mark", "text-anchor": "middle",
              fill: se.colour, "data-gap": `${se.name}|${periods[i]}`, text: "×",
            }, [s("title", { text: `${se.name}, ${monthName(periods[i])}: suppressed` })]));
          }
        }
      });
      flush();
    });
    const aria = `${title}. ${series.length} series over ${n} months, ${points} values shown` +
      (gaps ? `, ${gaps} suppressed values shown as gaps.` : ".");
    const svgNode = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": aria, class: "line-chart" }, [
      s("title", { text: title }),
      ...grid,
      ...xLabels,
      gaps ? s("text", { x: L - 6, y: base + 34, class: "tick", "text-anchor": "end", text: "supp." }) : null,
      ...lines,
      ...dots,
      ...marks,
    ]);
    const legend = series.map((se) => seriesKey(se.name, se.colour, se.dash, se.width));
    return chartFigure(id, title, svgNode, points, gaps, legend);
  }

  /* Horizontal bars, one group per category, one bar per measure. A suppressed bar is a
   * hatched stub labelled "suppressed" (never a zero-length bar). */
  function barChart({ id, title, groups, measures, empty }) {
    const W = 640;
    const LABEL_W = 236;
    const R = 86;
    const BAR = 13;
    const GAP = 9;
    const T = 6;
    const numbers = groups.flatMap((g) => g.values.filter(isNum));
    const points = numbers.length;
    const gaps = groups.flatMap((g) => g.values.filter((v) => v === SUPPRESSED)).length;
    if (!groups.length) {
      return chartFigure(id, title, h("p", { class: "empty", text: empty }), 0, 0, null);
    }
    const max = niceMax(Math.max(0, ...numbers));
    const plotW = W - LABEL_W - R;
    const groupH = measures.length * BAR + GAP;
    const H = T + groups.length * groupH + 20;
    const parts = [];
    const step = niceStep(max / 4);
    for (let v = 0; v <= max + 1e-9; v += step) {
      const gx = LABEL_W + (v / max) * plotW;
      parts.push(s("line", { x1: gx, x2: gx, y1: T, y2: H - 18, class: v === 0 ? "axis" : "grid" }));
      parts.push(s("text", { x: gx, y: H - 4, class: "tick", "text-anchor": "middle", text: fmt(v) }));
    }
    groups.forEach((g, gi) => {
      const top = T + gi * groupH;
      const text = g.label.length > 34 ? `${g.label.slice(0, 33)}…` : g.label;
      parts.push(s("text", { x: LABEL_W - 8, y: top + (measures.length * BAR) / 2 + 4, class: "cat", "text-anchor": "end", text }, [
        s("title", { text: g.label }),
      ]));
      g.values.forEach((v, mi) => {
        const by = top + mi * BAR;
        const name = `${g.label}${measures.length > 1 ? `, ${measures[mi].name.toLowerCase()}` : ""}`;
        if (isNum(v)) {
          const bw = (v / max) * plotW;
          parts.push(s("rect", { x: LABEL_W, y: by + 1, width: Math.max(bw, 0).toFixed(1), height: BAR - 2, fill: measures[mi].colour }, [
            s("title", { text: `${name}: ${fmt(v)}` }),
          ]));
          parts.push(s("text", { x: LABEL_W + bw + 4, y: by + BAR - 3, class: "val", text: fmt(v) }));
        } else if (v === SUPPRESSED) {
          parts.push(s("rect", {
            x: LABEL_W, y: by + 1, width: 26, height: BAR - 2, fill: "url(#hatch)", stroke: measures[mi].colour,
            class: "supp-bar", "data-gap": name,
          }, [s("title", { text: `${name}: suppressed` })]));
          parts.push(s("text", { x: LABEL_W + 30, y: by + BAR - 3, class: "val supp-text", text: "suppressed" }));
        }
      });
    });
    const aria = `${title}. ${groups.length} categories, ${points} values shown` +
      (gaps ? `, ${gaps} suppressed values shown as hatched stubs.` : ".");
    const svgNode = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": aria, class: "bar-chart" }, [
      s("title", { text: title }),
      ...parts,
    ]);
    const legend = measures.length > 1
      ? measures.map((me) => seriesKey(me.name, me.colour, null, 8))
      : null;
    return chartFigure(id, title, svgNode, points, gaps, legend);
  }

  // Order categories by their first figure, largest first; suppressed after the numbers.
  function rank(groups) {
    const score = (g) => (isNum(g.values[0]) ? g.values[0] : g.values[0] === SUPPRESSED ? -0.5 : -1);
    return groups.slice().sort((a, b) => score(b) - score(a) || a.label.localeCompare(b.label));
  }

  function renderTrends(m) {
    const areas = [...m.areas, REGION];
    const style = (a) => ({
      name: areaName(a),
      colour: areaColour(m, a),
      dash: areaDash(m, a),
      width: a === REGION ? 3 : 2,
    });
    const incidents = lineChart({
      id: "incidents-trend",
      title: "Incidents per month",
      periods: m.periods,
      series: areas.map((a) => ({ ...style(a), values: m.periods.map((p) => totalOf(m, "incidents", p, a)) })),
      unit: " incidents",
      format: fmt,
    });
    const share = lineChart({
      id: "police-share-trend",
      title: "Share of incidents committed by police (%)",
      periods: m.periods,
      series: areas.map((a) => ({
        ...style(a),
        values: m.periods.map((p) => sharePoint(entryOf(m, "police-share", "shares", p, a))),
      })),
      unit: " %",
      yMax: 100,
      format: (v) => fmt(Math.round(v * 10) / 10),
    });
    const k = m.header.k;
    const response = lineChart({
      id: "response-time-trend",
      title: "Time to first response in the region (hours)",
      periods: m.periods,
      series: [
        { name: "Median", colour: REGION_COLOUR, width: 3, values: m.periods.map((p) => statPoint(entryOf(m, "time-to-first-response", "stats", p, REGION), "median", k)) },
        { name: "90th percentile", colour: PALETTE[1], dash: "6 3", width: 2, values: m.periods.map((p) => statPoint(entryOf(m, "time-to-first-response", "stats", p, REGION), "p90", k)) },
      ],
      unit: " h",
      format: (v) => fmt(Math.round(v * 10) / 10),
    });
    replace("trend-charts", [incidents, share, response]);
  }

  function breakdownChart(m, id, indicator, title, period, area) {
    const groups = breakdownOf(m, indicator, period, area).map((c) => ({ label: label(c.key), values: [c.value] }));
    return barChart({
      id,
      title: `${title}: ${areaName(area)}, ${monthName(period)}`,
      groups: rank(groups),
      measures: [{ name: "Count", colour: PALETTE[0] }],
      empty: "None recorded in this month.",
    });
  }

  function referralChart(m, period, area) {
    const stages = [
      ["Made", "referrals-made-by-service", PALETTE[0]],
      ["Accepted", "referrals-accepted-by-service", PALETTE[5]],
      ["Completed", "referrals-completed-by-service", PALETTE[2]],
    ];
    const per = stages.map(([, ind]) => new Map(breakdownOf(m, ind, period, area).map((c) => [c.key, c.value])));
    const keys = [...new Set(per.flatMap((x) => [...x.keys()]))].sort();
    const groups = keys.map((key) => ({ label: label(key), values: per.map((x) => (x.has(key) ? x.get(key) : 0)) }));
    return barChart({
      id: "referrals-by-service",
      title: `Referrals by service: ${areaName(area)}, ${monthName(period)}`,
      groups: rank(groups),
      measures: stages.map(([name, , colour]) => ({ name, colour })),
      empty: "No referrals recorded in this month.",
    });
  }

  function renderBreakdowns(m) {
    const period = currentPeriod(m);
    const area = state.area;
    replace("legend-breakdowns", suppressionLegend(m.header.k));
    replace("breakdown-charts", [
      breakdownChart(m, "incidents-by-violence-type", "incidents-by-violence-type", "Incidents by violence type", period, area),
      breakdownChart(m, "incidents-by-gbvims-type", "incidents-by-gbvims-type", "Incidents by GBVIMS core type", period, area),
      breakdownChart(m, "incidents-by-perpetrator", "incidents-by-perpetrator", "Incidents by perpetrator", period, area),
      referralChart(m, period, area),
      breakdownChart(m, "police-responses", "police-responses", "Police responses to reports", period, area),
    ]);
  }

  // ------------------------------------------------------------------ tables

  const NOT_PUBLISHED = "not published: no cases, or fewer than k";

  function figureCell(v) {
    if (v === SUPPRESSED) {
      return h("td", { class: "supp", "data-suppressed": "", title: "suppressed (disclosure control)" }, [
        h("span", { text: "suppressed" }),
      ]);
    }
    if (v === null || v === undefined) return h("td", { class: "np", title: NOT_PUBLISHED, text: "—" });
    return h("td", { class: "num", text: fmt(v) });
  }

  function textCell(text) {
    return h("td", { class: "num", text });
  }

  function indicatorTable(id, caption, areas, rows) {
    const head = h("tr", {}, [
      h("th", { scope: "col", text: "" }),
      ...areas.map((a) => h("th", { scope: "col", class: a === REGION ? "region" : null, text: areaName(a) })),
    ]);
    const body = rows.map(([name, cells, cls]) => h("tr", { class: cls || null }, [
      h("th", { scope: "row", text: name }),
      ...cells,
    ]));
    return h("div", { class: "table-wrap", "data-indicator": id }, [
      h("table", {}, [
        h("caption", {}, caption),
        h("thead", {}, head),
        h("tbody", {}, body),
      ]),
    ]);
  }

  function captionOf(id, period) {
    return [
      h("span", { class: "cap-title", text: indicatorTitle(id) }),
      h("span", { class: "cap-period", text: ` · ${monthName(period)}` }),
      NOTES[id] ? h("span", { class: "cap-note", text: NOTES[id] }) : null,
    ];
  }

  function tableForStatement(st, period) {
    const id = st.indicator;
    const t = (st.tables || []).find((x) => x.period === period && isCountryTable(x));
    if (t) {
      const areas = [...t.rows, REGION];
      if (t.columns.length === 1) {
        return indicatorTable(id, captionOf(id, period), areas, [
          [label(t.columns[0]), [...t.row_totals, t.total].map(figureCell)],
        ]);
      }
      const rows = t.columns.map((col, j) => [label(col), [...t.cells.map((r) => r[j]), t.column_totals[j]].map(figureCell)]);
      rows.push(["Total", [...t.row_totals, t.total].map(figureCell), "total"]);
      return indicatorTable(id, captionOf(id, period), areas, rows);
    }
    const stats = (st.stats || []).filter((x) => x.period === period && !ofPartner(x));
    if (stats.length) {
      const areas = stats.map((x) => x.area);
      return indicatorTable(id, captionOf(id, period), areas, [
        ["Cases (n)", stats.map((x) => figureCell(x.n))],
        ["Median (hours)", stats.map((x) => figureCell(x.median))],
        ["90th percentile (hours)", stats.map((x) => figureCell(x.p90))],
      ]);
    }
    const shares = (st.shares || []).filter((x) => x.period === period && !ofPartner(x));
    if (shares.length) {
      const areas = shares.map((x) => x.area);
      return indicatorTable(id, captionOf(id, period), areas, [
        ["Incidents by police", shares.map((x) => figureCell(x.police))],
        ["All incidents", shares.map((x) => figureCell(x.incidents))],
        ["Share by police", shares.map((x) => (isNum(x.share) ? textCell(fmtShare(x.share)) : figureCell(null)))],
      ]);
    }
    return h("div", { class: "table-wrap", "data-indicator": id }, [
      h("p", { class: "cap-title", text: indicatorTitle(id) }),
      h("p", { class: "empty", text: `None recorded in ${monthName(period)}.` }),
    ]);
  }

  /* The partner figures of one statement for one month (null if it has none): a row per
   * partner under a heading row for its country, the statement's measures as columns. */
  function partnerTableFor(st, period) {
    const t = (st.tables || []).find((x) => x.period === period && !isCountryTable(x));
    if (t) {
      const one = t.columns.length === 1;
      const heads = one ? [label(t.columns[0])] : [...t.columns.map(label), "Total"];
      return partnerTable(st.indicator, period, heads, t.rows.map((partner, i) => ({
        partner,
        country: t.countries[i],
        cells: (one ? [t.row_totals[i]] : [...t.cells[i], t.row_totals[i]]).map(figureCell),
      })));
    }
    const stats = (st.stats || []).filter((x) => x.period === period && ofPartner(x));
    if (stats.length) {
      return partnerTable(st.indicator, period, ["Cases (n)", "Median (hours)", "90th percentile (hours)"],
        stats.map((x) => ({ partner: x.partner, country: x.area, cells: [figureCell(x.n), figureCell(x.median), figureCell(x.p90)] })));
    }
    const shares = (st.shares || []).filter((x) => x.period === period && ofPartner(x));
    if (shares.length) {
      return partnerTable(st.indicator, period, ["Incidents by police", "All incidents", "Share by police"],
        shares.map((x) => ({
          partner: x.partner,
          country: x.area,
          cells: [figureCell(x.police), figureCell(x.incidents), isNum(x.share) ? textCell(fmtShare(x.share)) : figureCell(null)],
        })));
    }
    return null;
  }

  function partnerTable(id, period, heads, rows) {
    const head = h("tr", {}, [
      h("th", { scope: "col", text: "Partner" }),
      ...heads.map((x) => h("th", { scope: "col", text: x })),
    ]);
    const body = [];
    let country = null;
    for (const r of rows) {
      if (r.country !== country) {
        country = r.country;
        body.push(h("tr", { class: "country-group", "data-country": country }, [
          h("th", { scope: "colgroup", colspan: heads.length + 1, text: areaName(country) }),
        ]));
      }
      body.push(h("tr", { "data-partner": r.partner, "data-country": r.country }, [
        h("th", { scope: "row", class: "partner", text: r.partner }),
        ...r.cells,
      ]));
    }
    return h("div", { class: "table-wrap partner-table", "data-indicator": id, "data-dimension": "partner" }, [
      h("table", {}, [
        h("caption", {}, [
          h("span", { class: "cap-title", text: `${indicatorTitle(id)}, by partner` }),
          h("span", { class: "cap-period", text: ` · ${monthName(period)}` }),
          h("span", {
            class: "cap-note",
            text: "Partners in their countries (the region document allows partner breakdowns); " +
              "a country's figures are the sums of its partners', protected together.",
          }),
        ]),
        h("thead", {}, head),
        h("tbody", {}, body),
      ]),
    ]);
  }

  function renderTables(m) {
    const period = currentPeriod(m);
    document.getElementById("tables-title").textContent = `Tables for ${monthName(period)}`;
    replace("legend-tables", suppressionLegend(m.header.k));
    const known = ORDER.filter((id) => m.byId.has(id));
    const others = m.statements.map((st) => st.indicator).filter((id) => !ORDER.includes(id)).sort();
    replace("indicator-tables", [...known, ...others].flatMap((id) => {
      const st = m.byId.get(id);
      return [tableForStatement(st, period), m.partners ? partnerTableFor(st, period) : null];
    }));
  }

  // ------------------------------------------------------------------ release details

  function renderMeta(m) {
    const st = m.header;
    const inp = st.inputs;
    const asOf = st.as_of ? st.as_of.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, " UTC") : "not recorded";
    const rows = [
      ["release", "Release", fmt(m.number)],
      ["as-of", "As of (last event in the stream)", asOf],
      ["region", "Region", `${st.region.toUpperCase()} (region document version ${st.region_version})`],
      ["aggregator", "Published by", st.aggregator],
      ["k", "Minimum cell size k", fmt(st.k)],
      ["breakdowns", "Breakdowns", st.breakdowns],
      ["stream", "Input stream", inp.stream],
      ["seq", "Stream sequences", `${fmt(inp.first_seq)} to ${fmt(inp.last_seq)}`],
      ["accepted", "Accepted envelopes", fmt(inp.accepted)],
      ["commitment", "Commitment (Merkle root of the accepted envelopes)", inp.commitment],
      ["kid", "Signing key id", st.kid || ""],
      ["indicators", "Indicators", fmt(m.statements.length)],
    ];
    replace("release-meta", h("dl", { class: "meta" }, rows.map(([key, name, value]) => h("div", {}, [
      h("dt", { text: name }),
      h("dd", { "data-field": key, class: key === "commitment" || key === "kid" ? "hash" : null, text: value }),
    ]))));
    const line = document.getElementById("release-line");
    line.replaceChildren(
      h("strong", { text: `Release ${fmt(m.number)}` }),
      ` · ${st.region.toUpperCase()} · as of ${asOf} · k = ${st.k} · `,
      h("a", { href: "/api/releases/latest.csv", download: true, text: "CSV" }),
      " · ",
      h("a", { href: "/api/releases/latest", text: "JSON" }),
    );
    document.getElementById("page-title").textContent = `Regional indicators: ${st.region.toUpperCase()}`;
  }

  // ------------------------------------------------------------------ controls

  function currentPeriod(m) {
    return state.period && m.periods.includes(state.period) ? state.period : m.latest;
  }

  function renderControls(m) {
    const period = document.getElementById("period-select");
    period.replaceChildren(...m.periods.slice().reverse().map((p) => h("option", {
      value: p, selected: p === currentPeriod(m), text: p === m.latest ? `${monthName(p)} (latest)` : monthName(p),
    })));
    if (!m.areas.includes(state.area)) state.area = REGION;
    const area = document.getElementById("area-select");
    area.replaceChildren(...[REGION, ...m.areas].map((a) => h("option", {
      value: a, selected: a === state.area, text: a === REGION ? "Region (all countries)" : areaName(a),
    })));
  }

  function wireControls() {
    document.getElementById("controls").addEventListener("submit", (e) => e.preventDefault());
    document.getElementById("period-select").addEventListener("change", (e) => {
      const m = state.model;
      if (!m) return;
      state.period = e.target.value === m.latest ? null : e.target.value;
      renderBreakdowns(m);
      renderTables(m);
    });
    document.getElementById("area-select").addEventListener("change", (e) => {
      state.area = e.target.value;
      if (state.model) renderBreakdowns(state.model);
    });
  }

  // ------------------------------------------------------------------ loading and live updates

  function setState(name, release) {
    const app = document.getElementById("app");
    app.dataset.state = name;
    if (release !== undefined) app.dataset.release = String(release);
  }

  function notice(text) {
    const box = document.getElementById("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }

  function render(m) {
    if (!m.latest || !m.header) {
      notice(`Release ${m.number} holds no figures yet.`);
      setState("empty", m.number);
      return;
    }
    notice("");
    renderMeta(m);
    renderControls(m);
    renderHeadlines(m);
    renderTrends(m);
    renderBreakdowns(m);
    renderTables(m);
    setState("ready", m.number);
  }

  async function fetchRelease() {
    let response;
    try {
      response = await fetch(LATEST_URL, { cache: "no-store", headers: { Accept: "application/json" } });
    } catch (err) {
      notice("Could not reach the aggregator. The page retries when the connection comes back.");
      setState(state.model ? "ready" : "error");
      return;
    }
    if (response.status === 404) {
      notice("No release has been published yet. This page shows the first one as soon as it is.");
      setState("empty");
      return;
    }
    if (!response.ok) {
      notice(`Could not load the latest release (HTTP ${response.status}).`);
      setState(state.model ? "ready" : "error");
      return;
    }
    const m = buildModel(await response.json());
    const previous = state.model;
    state.model = m;
    render(m);
    if (previous && previous.number !== m.number) {
      document.getElementById("announce").textContent = `Release ${m.number} loaded.`;
    }
  }

  function load() {
    if (state.loading) {
      state.again = true;
      return state.loading;
    }
    state.loading = fetchRelease().finally(() => {
      state.loading = null;
      if (state.again) {
        state.again = false;
        load();
      }
    });
    return state.loading;
  }

  function connection(name, text) {
    const box = document.getElementById("connection");
    box.dataset.connection = name;
    box.querySelector(".connection-text").textContent = text;
  }

  function subscribe() {
    if (typeof EventSource === "undefined") {
      connection("closed", "Live updates are not available in this browser: reload for new releases.");
      return;
    }
    const source = new EventSource(STREAM_URL);
    source.addEventListener("open", () => connection("open", "Live: new releases appear here automatically."));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) connection("closed", "Live updates stopped: reload the page.");
      else connection("connecting", "Connection lost: reconnecting…");
    });
    source.addEventListener("release", (event) => {
      let number;
      try {
        number = JSON.parse(event.data).release;
      } catch (err) {
        return;
      }
      if (!state.model || state.model.number !== number) load();
    });
  }

  function start() {
    wireControls();
    load();
    subscribe();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
