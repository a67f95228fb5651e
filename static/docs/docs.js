// Renders /api/openapi.json as a readable page. Builds DOM nodes with
// textContent only (no innerHTML), so nothing in the document is executed.
(function () {
  "use strict";
  var METHODS = ["get", "post", "put", "patch", "delete"];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  // Inline markdown: `code` and **bold**; blocks: paragraphs and "* " lists.
  function inline(text) {
    var out = [], re = /(`[^`]+`|\*\*[^*]+\*\*)/g, last = 0, match;
    while ((match = re.exec(text))) {
      if (match.index > last) out.push(text.slice(last, match.index));
      var token = match[0];
      out.push(token[0] === "`" ? el("code", {}, [token.slice(1, -1)]) : el("strong", {}, [token.slice(2, -2)]));
      last = match.index + token.length;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }

  function markdown(text) {
    var box = el("div", {class: "intro"}), list = null, para = [];
    function flushPara() { if (para.length) { box.appendChild(el("p", {}, inline(para.join(" ")))); para = []; } }
    text.split("\n").forEach(function (line) {
      var bullet = /^\* (.*)$/.exec(line);
      if (bullet) { flushPara(); list = list || box.appendChild(el("ul")); list.appendChild(el("li", {}, inline(bullet[1]))); }
      else if (/^\s+\S/.test(line) && list) { list.lastChild.appendChild(document.createTextNode(" "));
        inline(line.trim()).forEach(function (n) { list.lastChild.appendChild(typeof n === "string" ? document.createTextNode(n) : n); }); }
      else if (!line.trim()) { flushPara(); list = null; }
      else { list = null; para.push(line); }
    });
    flushPara();
    return box;
  }

  function refName(ref) { return ref.split("/").pop(); }

  // A schema block. It may scroll sideways, so a keyboard user must be able to
  // reach it (tabindex) and a screen reader must say what it is (a named group).
  function codeBlock(text, label) {
    return el("pre", {tabindex: "0", role: "group", "aria-label": label}, [text]);
  }

  // A table with a header row; `heads` are [text, class] pairs (the class sizes the column).
  function table(heads, rows) {
    var head = el("tr", {}, heads.map(function (h) { return el("th", {scope: "col", class: h[1]}, [h[0]]); }));
    return el("table", {}, [el("thead", {}, [head]), el("tbody", {}, rows)]);
  }

  // A compact, TypeScript-like rendering of a JSON schema.
  function shape(schema, doc, depth, seen) {
    if (!schema) return "any";
    if (schema.$ref) {
      var name = refName(schema.$ref);
      if (seen.indexOf(name) >= 0 || depth > 4) return name;
      return shape(doc.components.schemas[name], doc, depth, seen.concat([name]));
    }
    if (schema.anyOf || schema.oneOf) {
      return (schema.anyOf || schema.oneOf).map(function (s) { return shape(s, doc, depth, seen); }).join(" | ");
    }
    if (schema.enum) return schema.enum.map(function (v) { return JSON.stringify(v); }).join(" | ");
    if (schema.const !== undefined) return JSON.stringify(schema.const);
    var pad = new Array(depth + 2).join("  ");
    if (schema.type === "object" || schema.properties) {
      var required = schema.required || [], lines = [];
      Object.keys(schema.properties || {}).forEach(function (key) {
        var prop = schema.properties[key], notes = [];
        ["minLength", "maxLength", "minimum", "maximum", "pattern", "format"].forEach(function (k) {
          if (prop[k] !== undefined) notes.push(k + " " + prop[k]);
        });
        if (prop.default !== undefined && prop.default !== null) notes.push("default " + JSON.stringify(prop.default));
        lines.push(pad + key + (required.indexOf(key) >= 0 ? "" : "?") + ": " + shape(prop, doc, depth + 1, seen) +
                   (notes.length ? "   // " + notes.join(", ") : "") + (prop.description ? "   // " + prop.description : ""));
      });
      var extra = schema.additionalProperties;
      if (extra && typeof extra === "object") lines.push(pad + "[field: string]: " + shape(extra, doc, depth + 1, seen));
      return "{\n" + lines.join("\n") + "\n" + new Array(depth + 1).join("  ") + "}";
    }
    if (schema.type === "array") return shape(schema.items, doc, depth, seen) + "[]";
    return schema.type || "any";
  }

  function render(doc) {
    var main = document.getElementById("content"), toc = document.getElementById("toc");
    main.textContent = "";
    main.appendChild(el("p", {}, ["Version " + doc.info.version]));
    main.appendChild(markdown(doc.info.description || ""));
    var byTag = {};
    Object.keys(doc.paths).forEach(function (path) {
      METHODS.forEach(function (method) {
        var op = doc.paths[path][method];
        if (!op) return;
        var tag = (op.tags && op.tags[0]) || "other";
        (byTag[tag] = byTag[tag] || []).push({path: path, method: method, op: op});
      });
    });
    Object.keys(byTag).forEach(function (tag) {
      toc.appendChild(el("h3", {}, [tag]));
      main.appendChild(el("h2", {class: "tag"}, [tag]));
      byTag[tag].forEach(function (item) {
        var id = item.op.operationId || (item.method + item.path);
        toc.appendChild(el("a", {href: "#" + id, "data-filter": (item.path + " " + item.op.summary + " " + tag).toLowerCase()},
                           [item.method.toUpperCase() + " " + item.path]));
        main.appendChild(operation(item, id, tag, doc));
      });
    });
  }

  function operation(item, id, tag, doc) {
    var op = item.op, where = item.method.toUpperCase() + " " + item.path;
    var title = el("h2", {}, [el("span", {class: "method " + item.method}, [item.method]),
                               el("span", {class: "path"}, [item.path])]);
    if (op.security && op.security.length) title.appendChild(el("span", {class: "badge"}, ["Bearer token"]));
    if (op["x-websocket"]) title.appendChild(el("span", {class: "badge"}, ["WebSocket"]));
    var box = el("section", {class: "op", id: id,
                             "data-filter": (item.path + " " + op.summary + " " + tag).toLowerCase()},
                 [title, el("p", {class: "summary"}, [op.summary || ""])]);
    if (op.description) box.appendChild(el("p", {class: "description"}, [op.description]));
    if (op.parameters && op.parameters.length) {
      box.appendChild(el("h4", {}, ["Parameters"]));
      box.appendChild(table([["Name", "param"], ["In", "where"], ["Meaning", ""]], op.parameters.map(function (p) {
        return el("tr", {}, [el("td", {}, [el("code", {}, [p.name])]), el("td", {}, [p.in + (p.required ? ", required" : "")]),
                             el("td", {}, [p.description || shape(p.schema, doc, 0, [])])]);
      })));
    }
    if (op.requestBody) {
      var media = op.requestBody.content["application/json"];
      box.appendChild(el("h4", {}, ["Request body (application/json" + (op.requestBody.required ? ", required" : "") + ")"]));
      box.appendChild(codeBlock(shape(media && media.schema, doc, 0, []), "Request body of " + where));
    }
    box.appendChild(el("h4", {}, ["Responses"]));
    var rows = Object.keys(op.responses).map(function (status) {
      var response = op.responses[status], content = response.content && response.content["application/json"];
      var cells = [el("td", {class: "status"}, [status]), el("td", {}, [response.description || ""])];
      if (content && content.schema) {
        var details = el("details", {}, [el("summary", {}, [content.schema.$ref ? refName(content.schema.$ref) : "schema"]),
                                         codeBlock(shape(content.schema, doc, 0, []), status + " response of " + where)]);
        cells[1].appendChild(details);
      }
      return el("tr", {}, cells);
    });
    box.appendChild(table([["Status", "status"], ["Meaning", ""]], rows));
    return box;
  }

  document.getElementById("filter").addEventListener("input", function (event) {
    var needle = event.target.value.trim().toLowerCase();
    document.querySelectorAll("[data-filter]").forEach(function (node) {
      node.classList.toggle("hidden", needle !== "" && node.getAttribute("data-filter").indexOf(needle) < 0);
    });
  });

  fetch("/api/openapi.json", {headers: {Accept: "application/json"}})
    .then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    })
    .then(render)
    .catch(function (error) {
      var main = document.getElementById("content");
      main.textContent = "Could not load /api/openapi.json: " + error.message;
    });
})();
