// minicnn explorer: the model's forward pass and the page around it, in plain JavaScript.
// The model (architecture, weights, test images, minicnn's own logits) is the JSON block "minicnn-data"
// that minicnn.see.explore wrote into this page; nothing is fetched from anywhere.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("minicnn-data").textContent);
  const [C, H, W] = DATA.input_shape;
  const BLOCK = 4;          // the drawing is a bitmap BLOCK times the input's size, counted in BLOCK x BLOCK
  const MAX_MAPS = 64;      // feature maps drawn per layer
  const state = { input: null, acts: null, bitmap: new Uint8Array(BLOCK * H * BLOCK * W), selected: -1,
                  pending: false, check: null, occlusion: null };

  // ---------------------------------------------------------------------------------------------
  // Tensors: {shape: [C, H, W] or [n], data: Float64Array in C order}, one image (no batch axis)
  // ---------------------------------------------------------------------------------------------
  function tensor(shape, data) {
    return { shape: shape, data: data || new Float64Array(shape.reduce((a, b) => a * b, 1)) };
  }
  function fromJSON(arr) { return tensor(arr.shape.slice(), Float64Array.from(arr.data)); }
  const LAYERS = DATA.layers.map(function (layer) {
    const params = {};
    for (const name in layer.params) params[name] = fromJSON(layer.params[name]);
    return Object.assign({}, layer, { params: params });
  });
  // A model the page draws only in part (a layer without a JavaScript forward): no prediction.
  const PARTIAL = Boolean(DATA.unsupported);

  // ---------------------------------------------------------------------------------------------
  // The forward pass, one function per layer type (minicnn.nn.layers, eval mode)
  // ---------------------------------------------------------------------------------------------
  function convOutSize(size, k, s, padTotal, d) {
    return Math.floor((size + padTotal - d * (k - 1) - 1) / s) + 1;
  }

  // Cross-correlation:
  // out[o, i, j] = bias[o] + sum over c, u, v of kernel[o, c, u, v] * x[c, i*s - pad + u*d, j*s - pad + v*d]
  function conv2d(x, L) {
    const [Ci, Hi, Wi] = x.shape, w = L.params.weight, [O, , kh, kw] = w.shape;
    const [sh, sw] = L.config.stride, [dh, dw] = L.config.dilation, [pt, pb, pl, pr] = L.pad;
    const Ho = convOutSize(Hi, kh, sh, pt + pb, dh), Wo = convOutSize(Wi, kw, sw, pl + pr, dw);
    const out = tensor([O, Ho, Wo]), wd = w.data, xd = x.data, bias = L.params.bias;
    for (let o = 0; o < O; o++) {
      for (let i = 0; i < Ho; i++) {
        for (let j = 0; j < Wo; j++) {
          let sum = bias ? bias.data[o] : 0;
          for (let c = 0; c < Ci; c++) {
            for (let u = 0; u < kh; u++) {
              const y = i * sh - pt + u * dh;
              if (y < 0 || y >= Hi) continue;
              for (let v = 0; v < kw; v++) {
                const xx = j * sw - pl + v * dw;
                if (xx < 0 || xx >= Wi) continue;
                sum += wd[((o * Ci + c) * kh + u) * kw + v] * xd[(c * Hi + y) * Wi + xx];
              }
            }
          }
          out.data[(o * Ho + i) * Wo + j] = sum;
        }
      }
    }
    return out;
  }

  // Max pooling pads with -inf; average pooling pads with zeros that count in the mean (PyTorch's default).
  function pool2d(x, L, isMax) {
    const [Ci, Hi, Wi] = x.shape, [kh, kw] = L.config.kernel_size, [sh, sw] = L.config.stride;
    const [ph, pw] = L.config.padding;
    const Ho = convOutSize(Hi, kh, sh, 2 * ph, 1), Wo = convOutSize(Wi, kw, sw, 2 * pw, 1);
    const out = tensor([Ci, Ho, Wo]);
    for (let c = 0; c < Ci; c++) {
      for (let i = 0; i < Ho; i++) {
        for (let j = 0; j < Wo; j++) {
          let acc = isMax ? -Infinity : 0;
          for (let u = 0; u < kh; u++) {
            for (let v = 0; v < kw; v++) {
              const y = i * sh - ph + u, xx = j * sw - pw + v;
              const value = (y < 0 || y >= Hi || xx < 0 || xx >= Wi) ? (isMax ? -Infinity : 0)
                : x.data[(c * Hi + y) * Wi + xx];
              acc = isMax ? Math.max(acc, value) : acc + value;
            }
          }
          out.data[(c * Ho + i) * Wo + j] = isMax ? acc : acc / (kh * kw);
        }
      }
    }
    return out;
  }

  function dense(x, L) {
    const w = L.params.weight, [O, I] = w.shape, out = tensor([O]), bias = L.params.bias;
    for (let o = 0; o < O; o++) {
      let sum = bias ? bias.data[o] : 0;
      for (let k = 0; k < I; k++) sum += w.data[o * I + k] * x.data[k];
      out.data[o] = sum;
    }
    return out;
  }

  function globalAvgPool(x) {
    const [Ci, Hi, Wi] = x.shape, out = tensor([Ci]);
    for (let c = 0; c < Ci; c++) {
      let sum = 0;
      for (let k = 0; k < Hi * Wi; k++) sum += x.data[c * Hi * Wi + k];
      out.data[c] = sum / (Hi * Wi);
    }
    return out;
  }

  // Eval mode: the running statistics, (x - running_mean) / sqrt(running_var + eps) * weight + bias.
  function batchNorm(x, L) {
    const [Ci, Hi, Wi] = x.shape, p = L.params, out = tensor(x.shape.slice()), n = Hi * Wi;
    for (let c = 0; c < Ci; c++) {
      const scale = p.weight.data[c] / Math.sqrt(p.running_var.data[c] + L.config.eps);
      for (let k = 0; k < n; k++) {
        out.data[c * n + k] = (x.data[c * n + k] - p.running_mean.data[c]) * scale + p.bias.data[c];
      }
    }
    return out;
  }

  function elementwise(f) { return function (x) { return tensor(x.shape.slice(), x.data.map(f)); }; }

  const FORWARD = {
    Conv2D: conv2d,
    ReLU: elementwise((v) => Math.max(v, 0)),
    LeakyReLU: (x, L) => elementwise((v) => (v > 0 ? v : v * L.config.negative_slope))(x),
    Tanh: elementwise(Math.tanh),
    Sigmoid: elementwise((v) => 0.5 * (1 + Math.tanh(0.5 * v))),
    MaxPool2D: (x, L) => pool2d(x, L, true),
    AvgPool2D: (x, L) => pool2d(x, L, false),
    GlobalAvgPool2D: globalAvgPool,
    Flatten: (x) => tensor([x.data.length], x.data),
    Dense: dense,
    Dropout: (x) => x,        // identity in eval mode (inverted dropout scales while training)
    BatchNorm2D: batchNorm,
    // body(x) + shortcut(x): its two inputs are the outputs of the body and of the shortcut
    Residual: (x, L, acts) => add(x, acts[L.inputs[1]]),
  };

  function add(a, b) { return tensor(a.shape.slice(), a.data.map((v, k) => v + b.data[k])); }

  // A layer of the user's own brings its forward pass as the source of a function (x, L, acts) => tensor.
  function forwardOf(L) {
    if (FORWARD[L.type]) return FORWARD[L.type];
    if (!L.javascript) throw new Error("no JavaScript forward pass for " + L.name);
    FORWARD[L.type] = new Function("tensor", "return (" + L.javascript + ");")(tensor);
    return FORWARD[L.type];
  }

  // Every layer's output for one input (C, H, W): [input, output of layer 0, output of layer 1, ...];
  // layer n reads the activations listed in LAYERS[n].inputs (the one before it, except in a block).
  function forward(input) {
    const acts = [input];
    for (const L of LAYERS) acts.push(forwardOf(L)(acts[L.inputs[0]], L, acts));
    return acts;
  }

  function softmax(logits) {
    const top = Math.max.apply(null, logits), exps = logits.map((v) => Math.exp(v - top));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((v) => v / total);
  }

  function logitsOf(input) { return Array.from(forward(input).pop().data); }

  // The page's own check: its logits for the embedded test images against minicnn's.
  function selfCheck() {
    let worst = 0, worstProb = 0;
    DATA.images.forEach(function (image, n) {
      const mine = logitsOf(fromJSON(image.input)), theirs = DATA.check.logits[n];
      const scale = Math.max(Math.max.apply(null, theirs.map(Math.abs)), 1e-30);
      const diff = Math.max.apply(null, mine.map((v, k) => Math.abs(v - theirs[k])));
      worst = Math.max(worst, diff / scale);
      const probs = softmax(mine), expected = DATA.check.probabilities[n];
      worstProb = Math.max(worstProb, Math.max.apply(null, probs.map((v, k) => Math.abs(v - expected[k]))));
    });
    const ok = DATA.images.length > 0 && worst <= DATA.check_rtol && worstProb <= DATA.check_rtol;
    state.check = { ok: ok, images: DATA.images.length, maxRelativeError: worst,
                    maxProbabilityError: worstProb,
                    rtol: DATA.check_rtol };
    return state.check;
  }

  // ---------------------------------------------------------------------------------------------
  // From a drawing to the model's input, the way the data was made
  // ---------------------------------------------------------------------------------------------
  // UCI's digits: a 32x32 bitmap counted in 4x4 blocks gives 0..16 per pixel; minicnn divides by 16;
  // the run standardizes each channel with the training split's mean and std (split.npz).
  function bitmapToInput(bitmap) {
    const input = tensor([C, H, W]), BW = BLOCK * W;
    for (let i = 0; i < H; i++) {
      for (let j = 0; j < W; j++) {
        let count = 0;
        for (let u = 0; u < BLOCK; u++) {
          for (let v = 0; v < BLOCK; v++) count += bitmap[(i * BLOCK + u) * BW + j * BLOCK + v];
        }
        for (let c = 0; c < C; c++) {
          input.data[(c * H + i) * W + j] = (count / (BLOCK * BLOCK) - DATA.mean[c]) / DATA.std[c];
        }
      }
    }
    return input;
  }

  // The value a blank pixel has after standardization, per channel.
  function blankValue(c) { return (0 - DATA.mean[c]) / DATA.std[c]; }

  // ---------------------------------------------------------------------------------------------
  // Drawing: pointer events on a canvas showing the bitmap enlarged
  // ---------------------------------------------------------------------------------------------
  const drawCanvas = document.getElementById("draw");
  // in bitmap pixels: strokes 1.4 input pixels wide on the 8x8 digits, relatively wider on larger inputs
  const penRadius = BLOCK * Math.max(0.7, W / 24);
  let last = null;

  function stamp(x, y) {
    const BW = BLOCK * W, BH = BLOCK * H, r = penRadius;
    for (let py = Math.max(0, Math.floor(y - r)); py < Math.min(BH, Math.ceil(y + r)); py++) {
      for (let px = Math.max(0, Math.floor(x - r)); px < Math.min(BW, Math.ceil(x + r)); px++) {
        const dx = px + 0.5 - x, dy = py + 0.5 - y;
        if (dx * dx + dy * dy <= r * r) state.bitmap[py * BW + px] = 1;
      }
    }
  }

  function strokeTo(point) {
    const from = last || point;
    const steps = Math.max(1, Math.ceil(2 * Math.hypot(point.x - from.x, point.y - from.y)));
    for (let s = 1; s <= steps; s++) {
      stamp(from.x + (point.x - from.x) * s / steps, from.y + (point.y - from.y) * s / steps);
    }
    last = point;
  }

  function bitmapPoint(event) {
    const rect = drawCanvas.getBoundingClientRect();
    return { x: (event.clientX - rect.left) / rect.width * BLOCK * W,
             y: (event.clientY - rect.top) / rect.height * BLOCK * H };
  }

  function onPointer(event) {
    if (event.type === "pointerdown") {
      drawCanvas.setPointerCapture && drawCanvas.setPointerCapture(event.pointerId);
      if (state.selected >= 0) clearDrawing(false);
      last = null;
    } else if (last === null || event.buttons === 0 && event.pointerType === "mouse") {
      return;
    }
    event.preventDefault();
    strokeTo(bitmapPoint(event));
    state.input = bitmapToInput(state.bitmap);
    scheduleUpdate(false);
  }

  function endStroke() {
    if (last === null) return;
    last = null;
    scheduleUpdate(true);
  }

  function clearDrawing(update) {
    state.bitmap.fill(0);
    state.selected = -1;
    document.querySelectorAll("#test-images figure.selected").forEach((f) => f.classList.remove("selected"));
    state.input = bitmapToInput(state.bitmap);
    if (update) scheduleUpdate(true);
  }

  function paintBitmap() {
    const BW = BLOCK * W, BH = BLOCK * H, ctx = drawCanvas.getContext("2d");
    const img = ctx.createImageData(BW, BH);
    for (let k = 0; k < BW * BH; k++) {
      const v = state.bitmap[k] ? 0 : 255;  // ink dark on white, as in the PNG figures
      img.data.set([v, v, v, 255], 4 * k);
    }
    ctx.putImageData(img, 0, 0);
  }

  // ---------------------------------------------------------------------------------------------
  // Heat maps and images
  // ---------------------------------------------------------------------------------------------
  // Diverging colours: white at 0, red for positive, blue for negative values, scaled by `limit`.
  function heatColour(value, limit) {
    const t = Math.max(-1, Math.min(1, limit > 0 ? value / limit : 0));
    const fade = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? [255, fade, fade] : [fade, fade, 255];
  }

  function paintHeat(canvas, values, rows, cols, limit) {
    canvas.width = cols;
    canvas.height = rows;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(cols, rows);
    for (let k = 0; k < rows * cols; k++) img.data.set(heatColour(values[k], limit).concat([255]), 4 * k);
    ctx.putImageData(img, 0, 0);
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Filter o of a kernel tensor (out, in, kh, kw), flattened.
  function filterOf(kernels, o) {
    const size = kernels.data.length / kernels.shape[0];
    return kernels.data.slice(o * size, (o + 1) * size);
  }

  function maxAbs(values) {
    let m = 0;
    for (const v of values) m = Math.max(m, Math.abs(v));
    return m;
  }

  // An input as the eye sees it: undo the standardization; three channels are RGB, others grey with
  // ink (high values) dark on white, as the PNG figures draw them.
  function paintImage(canvas, input) {
    canvas.width = W;
    canvas.height = H;
    const ctx = canvas.getContext("2d"), img = ctx.createImageData(W, H);
    for (let k = 0; k < H * W; k++) {
      const pixel = [0, 1, 2].map(function (ch) {
        const c = C === 3 ? ch : 0, v = input.data[c * H * W + k] * DATA.std[c] + DATA.mean[c];
        const level = Math.max(0, Math.min(1, v));
        return Math.round(255 * (C === 3 ? level : 1 - level));
      });
      img.data.set(pixel.concat([255]), 4 * k);
    }
    ctx.putImageData(img, 0, 0);
  }

  function sizeCanvas(canvas, rows, cols, target) {
    const scale = Math.max(1, Math.floor(target / Math.max(rows, cols)));
    canvas.style.width = cols * scale + "px";
    canvas.style.height = rows * scale + "px";
  }

  // ---------------------------------------------------------------------------------------------
  // The prediction and the feature maps
  // ---------------------------------------------------------------------------------------------
  function buildBars(count) {
    const bars = document.getElementById("bars");
    for (let k = 0; k < count; k++) {
      const bar = element("div", "bar");
      bar.append(element("div", "fill"), element("span", "", String(k)));
      bars.appendChild(bar);
    }
  }

  function showPrediction(probs) {
    const top = probs.indexOf(Math.max.apply(null, probs));
    Array.from(document.getElementById("bars").children).forEach(function (bar, k) {
      bar.classList.toggle("top", k === top);
      bar.firstChild.style.height = (100 * probs[k]).toFixed(2) + "%";
      bar.dataset.probability = String(probs[k]);
      bar.title = "class " + k + ": " + (100 * probs[k]).toFixed(1) + "%";
    });
    const label = document.getElementById("prediction");
    label.textContent = top + " (" + (100 * probs[top]).toFixed(1) + "%)";
    label.dataset.class = String(top);
  }

  function buildLayers() {
    const host = document.getElementById("layers");
    LAYERS.forEach(function (L, n) {
      const block = element("div", "layer"), title = element("h3"), maps = element("div", "maps");
      const shape = L.output_shape, shown = shape.length === 3 ? Math.min(shape[0], MAX_MAPS) : 1;
      title.textContent = L.name + "  \u2192  output (" + shape.join(", ") + ")" +
        (shape.length === 3 && shape[0] > MAX_MAPS ? ", first " + MAX_MAPS + " channels drawn" : "");
      for (let c = 0; c < shown; c++) {
        const canvas = document.createElement("canvas");
        canvas.dataset.layer = String(n);
        canvas.dataset.channel = String(c);
        canvas.addEventListener("click", onMapClick);
        if (shape.length === 3) sizeCanvas(canvas, shape[1], shape[2], 64);
        else { canvas.className = "vector"; canvas.style.width = Math.min(8 * shape[0], 900) + "px"; }
        maps.appendChild(canvas);
      }
      block.append(title, colourScale(), maps);
      host.appendChild(block);
    });
  }

  // A colour bar for one row of heat maps: blue at -limit, white at 0, red at +limit, with its numbers.
  function colourScale() {
    const scale = element("div", "scale"), bar = document.createElement("canvas");
    bar.width = 101;
    bar.height = 1;
    const ctx = bar.getContext("2d"), img = ctx.createImageData(101, 1);
    for (let k = 0; k <= 100; k++) img.data.set(heatColour(k - 50, 50).concat([255]), 4 * k);
    ctx.putImageData(img, 0, 0);
    scale.append(element("span", "low"), bar, element("span", "high"));
    return scale;
  }

  function paintScale(block, limit) {
    const scale = block.querySelector(".scale");
    scale.dataset.limit = String(limit);
    scale.querySelector(".low").textContent = (-limit).toPrecision(3);
    scale.querySelector(".high").textContent = "+" + limit.toPrecision(3);
  }

  function paintLayers(acts) {
    document.querySelectorAll("#layers .layer").forEach(function (block, n) {
      const out = acts[n + 1], limit = maxAbs(out.data);
      paintScale(block, limit);
      block.querySelectorAll(".maps canvas").forEach(function (canvas, c) {
        if (out.shape.length === 3) {
          const [, h, w] = out.shape;
          paintHeat(canvas, out.data.subarray(c * h * w, (c + 1) * h * w), h, w, limit);
        } else {
          paintHeat(canvas, out.data, 1, out.shape[0], limit);
        }
      });
    });
  }

  // The value of feature map `channel` of layer `layer` at (i, j) (for a vector output: element i).
  function featureValue(layer, channel, i, j) {
    const out = state.acts[layer + 1];
    if (out.shape.length === 1) return out.data[i];
    return out.data[(channel * out.shape[1] + i) * out.shape[2] + j];
  }

  // ---------------------------------------------------------------------------------------------
  // One convolution cell, computed: kernel, input patch, element-wise products, sum and bias
  // ---------------------------------------------------------------------------------------------
  function cellDetail(layer, o, i, j) {
    const L = LAYERS[layer], x = state.acts[L.inputs[0]], [Ci, Hi, Wi] = x.shape, w = L.params.weight;
    const [, , kh, kw] = w.shape, [sh, sw] = L.config.stride, [dh, dw] = L.config.dilation;
    const [pt, , pl] = L.pad;
    const channels = [];
    let sum = 0;
    for (let c = 0; c < Ci; c++) {
      const kernel = [], patch = [], products = [];
      for (let u = 0; u < kh; u++) {
        const y = i * sh - pt + u * dh;
        for (let v = 0; v < kw; v++) {
          const xx = j * sw - pl + v * dw;
          const value = (y < 0 || y >= Hi || xx < 0 || xx >= Wi) ? 0 : x.data[(c * Hi + y) * Wi + xx];
          const k = w.data[((o * Ci + c) * kh + u) * kw + v];
          kernel.push(k);
          patch.push(value);
          products.push(k * value);
          sum += k * value;
        }
      }
      channels.push({ kernel: kernel, patch: patch, products: products });
    }
    const bias = L.params.bias ? L.params.bias.data[o] : 0;
    return { layer: layer, channel: o, i: i, j: j, rows: kh, cols: kw, channels: channels, sum: sum,
             bias: bias,
             total: sum + bias, value: featureValue(layer, o, i, j) };
  }

  function numberTable(caption, values, rows, cols) {
    const table = document.createElement("table"), cap = document.createElement("caption");
    cap.textContent = caption;
    table.appendChild(cap);
    const limit = maxAbs(values);
    for (let r = 0; r < rows; r++) {
      const tr = table.insertRow();
      for (let c = 0; c < cols; c++) {
        // colours at half strength, so the numbers stay legible
        const td = tr.insertCell(), v = values[r * cols + c], rgb = heatColour(v, 2 * limit);
        td.textContent = v.toFixed(3);
        td.style.background = "rgb(" + rgb.join(",") + ")";
      }
    }
    return table;
  }

  function showDetail(d) {
    const host = document.getElementById("detail"), L = LAYERS[d.layer];
    host.textContent = "";
    const head = document.createElement("p");
    head.textContent = L.name + ", feature map " + d.channel + ", cell (" + d.i + ", " + d.j + ")" +
      (d.channels.length > 4 ? ": input channels 0 to 3 of " + d.channels.length + " shown, the sum covers all"
        : "");
    host.appendChild(head);
    d.channels.slice(0, 4).forEach(function (ch, c) {
      const row = document.createElement("div");
      row.append(numberTable("kernel [" + d.channel + ", " + c + "]", ch.kernel, d.rows, d.cols),
                 numberTable("\u00d7 input patch, channel " + c, ch.patch, d.rows, d.cols),
                 numberTable("= element-wise products", ch.products, d.rows, d.cols));
      host.appendChild(row);
    });
    const sum = document.createElement("p");
    sum.id = "detail-sum";
    sum.textContent = "sum of element-wise products " + d.sum.toFixed(5) + " + bias " + d.bias.toFixed(5) +
      " = " + d.total.toFixed(5) + "   (the feature map holds " + d.value.toFixed(5) + ")";
    host.appendChild(sum);
  }

  function otherDetail(layer, c, i, j) {
    const host = document.getElementById("detail");
    host.textContent = LAYERS[layer].name + ", channel " + c + ", cell (" + i + ", " + j + ") holds " +
      featureValue(layer, c, i, j).toFixed(5) + ". Click a Conv2D feature map to see its sum of products.";
  }

  // The panel of a clicked cell floats beside the clicked map, level with it, and stays in view
  // (position: fixed) while the page scrolls; its close button hides it.
  function placeDetail(canvas) {
    const panel = document.getElementById("detail-panel");
    panel.hidden = false;
    document.body.classList.add("detail-open");  // the maps make room on the right: measure after
    const rect = canvas.getBoundingClientRect(), maps = canvas.closest(".maps").getBoundingClientRect();
    const left = Math.min(Math.max(maps.right, rect.right) + 12, window.innerWidth - panel.offsetWidth - 8);
    const top = Math.min(Math.max(8, rect.top), window.innerHeight - panel.offsetHeight - 8);
    panel.style.left = Math.max(8, left) + "px";
    panel.style.top = Math.max(8, top) + "px";
    document.querySelectorAll("#layers canvas.clicked").forEach((c) => c.classList.remove("clicked"));
    canvas.classList.add("clicked");
  }

  function closeDetail() {
    document.getElementById("detail-panel").hidden = true;
    document.body.classList.remove("detail-open");
    document.querySelectorAll("#layers canvas.clicked").forEach((c) => c.classList.remove("clicked"));
  }

  function onMapClick(event) {
    const canvas = event.currentTarget, layer = Number(canvas.dataset.layer), c = Number(canvas.dataset.channel);
    const rect = canvas.getBoundingClientRect();
    const i = Math.min(canvas.height - 1, Math.floor((event.clientY - rect.top) / rect.height * canvas.height));
    const j = Math.min(canvas.width - 1, Math.floor((event.clientX - rect.left) / rect.width * canvas.width));
    if (LAYERS[layer].type === "Conv2D") showDetail(cellDetail(layer, c, i, j));
    else if (canvas.height === 1) otherDetail(layer, 0, j, 0);
    else otherDetail(layer, c, i, j);
    placeDetail(canvas);
  }

  // ---------------------------------------------------------------------------------------------
  // Occlusion: how much the predicted class's probability drops when a patch is blanked
  // ---------------------------------------------------------------------------------------------
  function occlusion(input) {
    const patch = Math.max(1, Math.ceil(Math.max(H, W) / 8));   // at most 8x8 patches: 64 forward passes
    const rows = Math.ceil(H / patch), cols = Math.ceil(W / patch);
    const base = softmax(logitsOf(input)), top = base.indexOf(Math.max.apply(null, base));
    const drops = new Float64Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      for (let q = 0; q < cols; q++) {
        const blanked = tensor(input.shape.slice(), Float64Array.from(input.data));
        for (let c = 0; c < C; c++) {
          for (let i = r * patch; i < Math.min(H, (r + 1) * patch); i++) {
            for (let j = q * patch; j < Math.min(W, (q + 1) * patch); j++) {
              blanked.data[(c * H + i) * W + j] = blankValue(c);
            }
          }
        }
        drops[r * cols + q] = base[top] - softmax(logitsOf(blanked))[top];
      }
    }
    return { drops: drops, rows: rows, cols: cols, patch: patch, predicted: top };
  }

  function paintOcclusion() {
    const result = occlusion(state.input), canvas = document.getElementById("occlusion");
    state.occlusion = result;
    paintHeat(canvas, result.drops, result.rows, result.cols, Math.max(maxAbs(result.drops), 1e-6));
    sizeCanvas(canvas, result.rows, result.cols, 160);
    document.getElementById("occlusion-note").textContent = "red: blanking this " + result.patch + "x" +
      result.patch + " patch lowers the probability of class " + result.predicted + " (largest drop " +
      maxAbs(result.drops).toFixed(3) + "); blue: raises it";
  }

  // ---------------------------------------------------------------------------------------------
  // Kernels before and after training, with the angle between them
  // ---------------------------------------------------------------------------------------------
  function angleDegrees(a, b) {
    let dot = 0, na = 0, nb = 0;
    for (let k = 0; k < a.length; k++) { dot += a[k] * b[k]; na += a[k] * a[k]; nb += b[k] * b[k]; }
    const cos = dot / Math.sqrt(na * nb);
    return Math.acos(Math.max(-1, Math.min(1, cos))) * 180 / Math.PI;
  }

  function kernelAngles() {
    const angles = {};
    for (const key in DATA.init_kernels) {
      const before = DATA.init_kernels[key], after = LAYERS[Number(key)].params.weight;
      angles[key] = [];
      for (let o = 0; o < before.shape[0]; o++) {
        angles[key].push(angleDegrees(filterOf(before, o), filterOf(after, o)));
      }
    }
    return angles;
  }

  function kernelCanvases(data, o, shape, limit) {
    const [, Ci, kh, kw] = shape, group = document.createElement("div");
    for (let c = 0; c < Math.min(Ci, 8); c++) {
      const canvas = document.createElement("canvas"), start = ((o * Ci) + c) * kh * kw;
      paintHeat(canvas, data.slice(start, start + kh * kw), kh, kw, limit);
      sizeCanvas(canvas, kh, kw, 36);
      group.appendChild(canvas);
    }
    return group;
  }

  function buildKernels() {
    const host = document.getElementById("kernels"), angles = kernelAngles();
    if (Object.keys(angles).length === 0) {
      host.textContent = "This run has no init.npz (or no Conv2D layer) to compare with.";
    }
    for (const key in angles) {
      const before = DATA.init_kernels[key], after = LAYERS[Number(key)].params.weight, title = element("h3");
      const [O, Ci] = before.shape;
      title.textContent = LAYERS[Number(key)].name + ": before (top) and after (bottom) training" +
        (Ci > 8 ? ", input channels 0 to 7 of " + Ci : "");
      host.appendChild(title);
      for (let o = 0; o < Math.min(O, MAX_MAPS); o++) {
        const pair = element("div", "kernel-pair"), label = element("div", "", "filter " + o + ": " +
                                                                     angles[key][o].toFixed(1) + "\u00b0");
        const limit = Math.max(maxAbs(filterOf(before, o)), maxAbs(filterOf(after, o)));
        label.dataset.angle = String(angles[key][o]);
        pair.append(kernelCanvases(before.data, o, before.shape, limit),
                    kernelCanvases(after.data, o, before.shape, limit), label);
        host.appendChild(pair);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Test images and the page's life cycle
  // ---------------------------------------------------------------------------------------------
  function buildImages() {
    const host = document.getElementById("test-images");
    DATA.images.forEach(function (image, n) {
      const figure = element("figure"), canvas = element("canvas");
      const caption = element("figcaption", "", "label " + image.label);
      paintImage(canvas, fromJSON(image.input));
      figure.title = "test image " + image.index;
      figure.append(canvas, caption);
      figure.addEventListener("click", () => selectImage(n));
      host.appendChild(figure);
    });
  }

  function selectImage(n) {
    state.bitmap.fill(0);
    state.selected = n;
    state.input = fromJSON(DATA.images[n].input);
    document.querySelectorAll("#test-images figure").forEach((f, k) => f.classList.toggle("selected", k === n));
    scheduleUpdate(true);
  }

  function update(withOcclusion) {
    state.acts = forward(state.input);
    paintBitmap();
    paintImage(document.getElementById("input-view"), state.input);
    paintLayers(state.acts);
    if (PARTIAL) return;  // the last activation drawn is not the model's output
    showPrediction(softmax(Array.from(state.acts[state.acts.length - 1].data)));
    if (withOcclusion) paintOcclusion();
  }

  // Redraw at most once a frame while the pointer moves; the occlusion map waits for the stroke's end.
  function scheduleUpdate(withOcclusion) {
    state.wantOcclusion = state.wantOcclusion || withOcclusion;
    if (state.pending) return;
    state.pending = true;
    requestAnimationFrame(flush);
  }

  function flush() {
    if (!state.pending) return;
    state.pending = false;
    const occ = state.wantOcclusion;
    state.wantOcclusion = false;
    update(occ);
  }

  function describeRun() {
    const m = DATA.metrics;
    const parts = ["run " + DATA.run, "data " + DATA.source, "input " + DATA.input_shape.join("\u00d7")];
    if (m.test_accuracy !== undefined) parts.push("test accuracy " + (100 * m.test_accuracy).toFixed(1) + "%");
    document.getElementById("run-info").textContent = parts.join(" \u00b7 ");
    document.getElementById("draw-note").textContent = C === 3 ? "the pen draws white in all three channels" : "";
    document.getElementById("input-note").textContent = (DATA.source === "digits" ? "UCI's preprocessing: " : "") +
      "the " + BLOCK * H + "x" + BLOCK * W + " bitmap counted in " + BLOCK + "x" + BLOCK + " blocks (0 to 16), " +
      "divided by 16 and standardized with the run's mean and std";
  }

  function showCheck(check) {
    const status = document.getElementById("check-status");
    status.className = "status " + (check.ok ? "ok" : "fail");
    status.dataset.ok = String(check.ok);
    status.textContent = "forward pass check on " + check.images + " test images: largest relative " +
      "difference of the logits from minicnn's " + check.maxRelativeError.toExponential(2) +
      " (limit " + check.rtol + ")" +
      (check.ok ? "" : ": THE PAGE DISAGREES WITH MINICNN");
  }

  function showUnsupported() {
    const box = document.getElementById("unsupported");
    box.hidden = false;
    box.textContent = "This page draws this model only in part: " + DATA.unsupported + "." +
      (LAYERS.length ? " The layers before it are drawn below; the prediction is not shown." : "");
    document.getElementById("check-status").textContent = "";
    if (!LAYERS.length) document.getElementById("explorer").hidden = true;
  }

  function start() {
    describeRun();
    if (PARTIAL) showUnsupported();
    if (!LAYERS.length) return;
    drawCanvas.width = BLOCK * W;
    drawCanvas.height = BLOCK * H;
    sizeCanvas(drawCanvas, BLOCK * H, BLOCK * W, 256);
    sizeCanvas(document.getElementById("input-view"), H, W, 128);
    ["pointerdown", "pointermove"].forEach((t) => drawCanvas.addEventListener(t, onPointer));
    ["pointerup", "pointercancel", "pointerleave"].forEach((t) => drawCanvas.addEventListener(t, endStroke));
    document.getElementById("clear").addEventListener("click", () => clearDrawing(true));
    document.getElementById("detail-close").addEventListener("click", closeDetail);
    if (!PARTIAL) buildBars(LAYERS[LAYERS.length - 1].output_shape[0]);
    buildLayers();
    buildImages();
    buildKernels();
    if (!PARTIAL) showCheck(selfCheck());
    if (DATA.images.length) selectImage(0); else clearDrawing(true);
    flush();
  }

  window.minicnnExplorer = {
    data: DATA, state: state, forward: forward, logitsOf: logitsOf, selfCheck: selfCheck, flush: flush,
    featureValue: featureValue, cellDetail: cellDetail, kernelAngles: kernelAngles, selectImage: selectImage,
    clear: () => { clearDrawing(true); flush(); },
    input: () => Array.from(state.input.data), bitmap: () => Array.from(state.bitmap),
    prediction: () => Number(document.getElementById("prediction").dataset.class),
    probabilities: () => softmax(Array.from(state.acts[state.acts.length - 1].data)),
  };
  start();
})();
