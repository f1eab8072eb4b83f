/// The Stratolab release this build is.
public enum StratolabVersion {
    public static let string = "0.1.0"
}
