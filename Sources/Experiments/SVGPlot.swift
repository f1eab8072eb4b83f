import Foundation

/// Minimal SVG line charts for reports (no dependencies): CDFs and time series, with optional
/// shaded windows (fault windows) and a legend.
public struct SVGPlot {
    public struct Series { public var name: String; public var points: [(Double, Double)]
        /// Points as dots (a scatter), not a line.
        public var dots = false
        public init(name: String, points: [(Double, Double)], dots: Bool = false) { self.name = name; self.points = points; self.dots = dots } }
    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var logX = false
    public var series: [Series] = []
    public var shaded: [(Double, Double, String)] = []
    public var width = 720.0, height = 420.0
    /// Room left of the lowest and right of the highest x, in x's units (dots at whole numbers, such
    /// as seeds, then sit clear of the axes).
    public var xMargin = 0.0
    /// x is a count or an index (seeds): its ticks at whole numbers only, never "1.6".
    public var wholeNumberX = false

    public init(title: String, xLabel: String, yLabel: String, logX: Bool = false) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.logX = logX
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]

    /// Whole numbers in [lo, hi], at most about ten of them (a step of 1, 2, 5, 10, …).
    static func wholeTicks(from lo: Double, to hi: Double) -> [Double] {
        let first = ceil(lo), last = floor(hi)
        guard last >= first else { return [] }
        var step = 1.0
        while (last - first) / step > 10 {
            let mantissa = step / pow(10, floor(log10(step)))
            step *= mantissa == 2 ? 2.5 : 2   // 1, 2, 5, 10, 20, 50, …
        }
        return stride(from: first, through: last, by: step).map { $0 }
    }

    /// Empirical CDF points of `values`.
    public static func cdf(_ values: [Double]) -> [(Double, Double)] {
        let s = values.filter { $0.isFinite }.sorted()
        return s.enumerated().map { ($0.element, Double($0.offset + 1) / Double(s.count)) }
    }

    func esc(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    public func render() -> String {
        let l = 70.0, r = 170.0, t = 40.0, b = 50.0
        let pw = width - l - r, ph = height - t - b
        let xs = series.flatMap { $0.points.map(\.0) }.filter { !logX || $0 > 0 }
        let ys = series.flatMap { $0.points.map(\.1) }.filter(\.isFinite)
        var x0 = xs.min() ?? 0, x1 = xs.max() ?? 1
        var y0 = min(ys.min() ?? 0, 0), y1 = ys.max() ?? 1
        if logX { x0 = log10(max(x0, 1e-9)); x1 = log10(max(x1, 1e-9)) } else { x0 -= xMargin; x1 += xMargin }
        if x1 <= x0 { x1 = x0 + 1 }
        if y1 <= y0 { y1 = y0 + 1 }
        y0 = min(y0, 0)
        func px(_ x: Double) -> Double { l + ((logX ? log10(max(x, 1e-9)) : x) - x0) / (x1 - x0) * pw }
        func py(_ y: Double) -> Double { t + ph - (y - y0) / (y1 - y0) * ph }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(width / 2)\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">\(esc(title))</text>\n"
        for (a, bEnd, label) in shaded {
            let xa = max(px(a), l), xb = min(px(bEnd), l + pw)
            if xb > xa { s += "<rect x=\"\(xa)\" y=\"\(t)\" width=\"\(xb - xa)\" height=\"\(ph)\" fill=\"#f4a582\" opacity=\"0.35\"><title>\(esc(label))</title></rect>\n" }
        }
        s += "<rect x=\"\(l)\" y=\"\(t)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"none\" stroke=\"#333\"/>\n"
        let xTicks: [Double] = wholeNumberX && !logX
            ? Self.wholeTicks(from: x0, to: x1)
            : (0...5).map { i in let fx = x0 + (x1 - x0) * Double(i) / 5; return logX ? pow(10, fx) : fx }
        for xv in xTicks {
            let xpix = px(xv)
            s += "<line x1=\"\(xpix)\" y1=\"\(t + ph)\" x2=\"\(xpix)\" y2=\"\(t + ph + 5)\" stroke=\"#333\"/><text x=\"\(xpix)\" y=\"\(t + ph + 18)\" text-anchor=\"middle\">\(wholeNumberX ? String(format: "%.0f", xv) : fmt(xv))</text>\n"
        }
        for i in 0...5 {
            let fy = y0 + (y1 - y0) * Double(i) / 5
            let ypix = t + ph - ph * Double(i) / 5
            s += "<line x1=\"\(l - 5)\" y1=\"\(ypix)\" x2=\"\(l)\" y2=\"\(ypix)\" stroke=\"#333\"/><text x=\"\(l - 8)\" y=\"\(ypix + 4)\" text-anchor=\"end\">\(fmt(fy))</text>\n"
        }
        s += "<text x=\"\(l + pw / 2)\" y=\"\(height - 10)\" text-anchor=\"middle\">\(esc(xLabel))</text>\n"
        s += "<text x=\"15\" y=\"\(t + ph / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 15 \(t + ph / 2))\">\(esc(yLabel))</text>\n"
        for (i, se) in series.enumerated() {
            let color = SVGPlot.palette[i % SVGPlot.palette.count]
            let pts = se.points.filter { !logX || $0.0 > 0 }
            // Thin long series so the page stays small.
            let stride = max(1, pts.count / 1500)
            let kept = pts.enumerated().filter { $0.offset % stride == 0 || $0.offset == pts.count - 1 }.map(\.element)
            if se.dots {
                for p in pts.prefix(3000) where p.1.isFinite { s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\" opacity=\"0.75\"/>", px(p.0), py(p.1), color as NSString) }
                s += "\n"
            } else {
                // A non-finite y is a gap (no data there): the line breaks instead of bridging it,
                // and a point alone between gaps is drawn as a dot.
                var runs: [[(Double, Double)]] = [[]]
                for p in kept { if p.1.isFinite { runs[runs.count - 1].append(p) } else if !runs[runs.count - 1].isEmpty { runs.append([]) } }
                for run in runs where !run.isEmpty {
                    if run.count == 1 { s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%@\"/>\n", px(run[0].0), py(run[0].1), color as NSString); continue }
                    let path = run.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
                    s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\" points=\"\(path)\"/>\n"
                }
            }
            let ly = t + 14 + Double(i) * 18
            s += "<line x1=\"\(l + pw + 12)\" y1=\"\(ly - 4)\" x2=\"\(l + pw + 34)\" y2=\"\(ly - 4)\" stroke=\"\(color)\" stroke-width=\"3\"/><text x=\"\(l + pw + 40)\" y=\"\(ly)\">\(esc(se.name))</text>\n"
        }
        return s + "</svg>\n"
    }

    func fmt(_ v: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 1000 { return String(format: "%.0f", v) }
        if abs(v) >= 10 { return String(format: "%.0f", v) }
        if abs(v) >= 1 { return String(format: "%.1f", v) }
        return String(format: "%.2f", v)
    }
}
